"""Every private Keras symbol of keras_fada/backend/keras_internals.py exists and behaves as
assumed; a failure names the symbol and the Keras version. Run this file against a new Keras
release before moving the bound in pyproject.toml."""

import contextlib
import re

import keras
import numpy as np
import pytest

import keras_fada
from keras_fada.backend import keras_internals as ki
from keras_fada.models.deeplabv2 import (
    batch_norm_layers,
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    freeze_batch_norm,
)
from keras_fada.optimizers import TorchSGD, official_optimizers
from tests.support import fada_fixtures as fx

BACKEND = keras.backend.backend()


@contextlib.contextmanager
def private(*symbols):
    """Turns any failure inside the block into one that names the private ``symbols`` it
    exercises and the Keras version."""
    for symbol in symbols:
        assert symbol in ki.PRIVATE_API, f"{symbol!r} is not listed in keras_internals.PRIVATE_API"
    try:
        yield
    except Exception as e:
        details = "".join(
            f"\n- {symbol!r}: needed for {ki.PRIVATE_API[symbol][0]}; public alternative checked: "
            f"{ki.PRIVATE_API[symbol][1]}"
            for symbol in symbols
        )
        pytest.fail(
            f"Keras {keras.__version__} (keras_internals checked against {ki.TESTED_KERAS}) changed "
            f"private API that keras-fada relies on: {type(e).__name__}: {e}{details}"
        )


def test_keras_is_the_tested_minor_version():
    major_minor = ".".join(keras.__version__.split(".")[:2])
    assert major_minor == ki.TESTED_KERAS, (
        f"Keras {keras.__version__} is installed but keras_internals was checked against "
        f"{ki.TESTED_KERAS}: run this file, then update TESTED_KERAS and the bound in pyproject.toml"
    )


# ------------------------------------------------------------------ mixed precision
SEEN_DTYPES = []


class _DtypeProbe(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(2,), initializer="ones")

    def call(self, x):
        def read():  # as Conv2D.call_scaled reads its kernel; bfloat16 + float32 is float32
            value = keras.ops.convert_to_tensor(self.w) + keras.ops.zeros((2,), "bfloat16")
            return keras.backend.standardize_dtype(value.dtype)

        autocast = read()
        with ki.variables_as_stored():
            stored = read()
        SEEN_DTYPES[:] = [autocast, stored]
        return x


def test_autocast_scope_reads_variables_as_stored():
    with private("keras.src.backend.AutocastScope"):
        _DtypeProbe(dtype="mixed_bfloat16")(np.ones((1, 2), "float32"))
        assert SEEN_DTYPES == ["bfloat16", "float32"]  # autocast, then as stored


# ------------------------------------------------------------------ functional graphs
class _Recorder(ki.GraphRunner, keras.Model):
    """Runs the graph as Keras does, recording what it was handed."""

    def run_graph(self, inputs, nodes, operation_fn):
        self.calls.append((inputs, nodes))
        values = {id(x): y for x, y in zip(self.inputs, inputs, strict=True)}
        for node in nodes:
            args, kwargs = node.fill_in(values)
            outputs = operation_fn(node.operation)(*args, **kwargs)
            for x, y in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
                values[id(x)] = y
        return ki.pack_outputs(self, [values[id(x)] for x in self.outputs])


def _graph():
    shared = keras.layers.Dense(3, name="shared")
    inputs = keras.Input((3,))
    a = shared(inputs)
    b = shared(keras.layers.Dropout(0.5, name="drop")(a))
    total = keras.layers.Add(name="add")([a, b])
    return inputs, {"total": total, "b": b}, shared


def test_graph_nodes_list_every_call_in_execution_order():
    with private(
        "Function._nodes_by_depth",
        "Function._get_operation_for_node",
        "Node.operation / is_input / input_tensors / outputs / arguments.fill_in",
    ):
        inputs, outputs, shared = _graph()
        model = keras.Model(inputs, outputs)
        nodes = ki.graph_nodes(model)
        names = [n.operation.name for n in nodes]
        assert names == ["shared", "drop", "shared", "add"], names
        first, drop, second, add = nodes
        assert first.operation is shared and second.operation is shared
        assert first.inputs == (inputs,) and drop.inputs == first.outputs
        assert second.inputs == drop.outputs and add.inputs == (first.outputs[0], second.outputs[0])
        assert len({n.key for n in nodes}) == 4
        assert [n.key for n in ki.graph_nodes(model)] == [n.key for n in nodes]  # stable
        args, kwargs = add.fill_in({id(first.outputs[0]): "a", id(second.outputs[0]): "b"})
        assert (list(args[0]), kwargs) == (["a", "b"], {})


def test_graph_runner_receives_every_graph_run_and_matches_keras():
    with private("Function._run_through_graph", "Function._outputs_struct"):
        inputs, outputs, _ = _graph()
        reference = keras.Model(inputs, outputs)
        runner = _Recorder(inputs, outputs)
        runner.calls = []
        x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
        got, want = runner(x), reference(x)
        assert len(runner.calls) == 1 and len(runner.calls[0][1]) == 4
        assert set(got) == {"total", "b"}  # the nesting of the outputs
        for key in want:
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(got[key]), keras.ops.convert_to_numpy(want[key])
            )
        # ``training`` reaches the layers through operation_fn: dropout acts only in training.
        trained = keras.ops.convert_to_numpy(runner(x, training=True)["b"])
        assert not np.allclose(trained, keras.ops.convert_to_numpy(want["b"]))
        # Symbolic runs (compute_output_spec) come here too, with KerasTensors.
        spec = runner.compute_output_spec(keras.KerasTensor((7, 3)))  # not the Input's shape
        assert tuple(spec["total"].shape) == (7, 3)
        assert isinstance(runner.calls[-1][0][0], keras.KerasTensor)


# ------------------------------------------------------------------ optimisers
def _built(optimizer, variables):
    optimizer.build(variables)
    return optimizer


def test_set_initial_epoch_in_on_train_begin_moves_fit():
    with private("Trainer._initial_epoch"):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        begin = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: ki.set_initial_epoch(model, 2))
        history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=3, verbose=0, callbacks=[begin])
        assert history.epoch == [2]


def test_resumed_tensorboard_continues_its_step(tmp_path):
    from keras_fada.callbacks import ResumableTensorBoard

    with private("TensorBoard._global_train_batch / _previous_epoch_iterations"):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(40)  # restored from a backup at step 40
        for cls, first in ((keras.callbacks.TensorBoard, 1), (ResumableTensorBoard, 41)):
            cb = cls(str(tmp_path / cls.__name__), update_freq=1000)
            cb.set_model(model)
            cb.on_train_begin()
            cb.on_train_batch_begin(0)
            assert cb._global_train_batch == first  # Keras' own restarts at step 1
            cb.on_train_end()


def test_slot_index_finds_each_variables_slot():
    with private("Optimizer._get_variable_index"):
        variables = [keras.Variable(np.zeros(shape, "float32")) for shape in [(2,), (3, 4), (5,)]]
        opt = _built(TorchSGD(0.1, momentum=0.9), variables)
        for i, v in enumerate(variables):
            assert ki.slot_index(opt, v) == i
            assert tuple(opt.momentums[ki.slot_index(opt, v)].shape) == tuple(v.shape)


def test_adam_moments_are_the_slots_adam_updates():
    with private("Adam._momentums / Adam._velocities"):
        variables = [keras.Variable(np.zeros(shape, "float32")) for shape in [(2,), (3,)]]
        opt = _built(keras.optimizers.Adam(0.1, beta_1=0.9, beta_2=0.99), variables)
        grads = [np.full((2,), 2.0, "float32"), np.full((3,), -1.0, "float32")]
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
        for v, g in zip(variables, grads, strict=True):
            m, s = ki.adam_moments(opt, v)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(m), 0.1 * g, rtol=1e-6)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(s), 0.01 * g**2, rtol=1e-5)


# ------------------------------------------------------------------ torch variables
@pytest.mark.skipif(BACKEND != "torch", reason="torch backend's variables")
def test_torch_parameter_is_the_variables_storage():
    import torch

    with private("torch backend Variable._value"):
        conv = keras_fada.layers.Conv2D(4, 3, use_bias=False)
        conv.build((None, 8, 8, 2))
        kernel = ki.torch_parameter(conv.kernel)
        assert isinstance(kernel, torch.nn.Parameter)
        assert any(p is kernel for p in conv.parameters())  # the one Parameter the layer tracks
        v = keras.Variable(np.arange(6, dtype="float32").reshape(2, 3))
        new = torch.nn.Parameter(ki.torch_parameter(v).detach().t().contiguous().t())
        ki.set_torch_parameter(v, new)
        assert ki.torch_parameter(v) is new and v.value is new
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), np.arange(6).reshape(2, 3))
        v.assign(np.ones((2, 3), "float32"))
        assert float(new.detach().sum()) == 6.0


# ------------------------------------------------------------------ the JAX trainer
def _compiled_programs(model, steps, steps_per_execution=1):
    """Names of the XLA programs lowered while ``fit`` runs ``steps`` steps (jax.monitoring)."""
    import jax

    event = "/jax/core/compile/jaxpr_to_mlir_module_duration"
    names = []

    def listener(name, _duration, **kwargs):
        if name == event:
            names.append(str(kwargs.get("fun_name")))

    batch = fx.tiny_batch()

    def batches():
        while True:
            yield (batch,)

    model.compile(
        steps_per_execution=steps_per_execution,
        **official_optimizers(
            base_lr=fx.CONFIG["base_lr"], base_lr_d=fx.CONFIG["base_lr_d"], max_iter=fx.CONFIG["max_iter"]
        ),
    )
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        model.fit(batches(), epochs=1, steps_per_epoch=steps, verbose=0)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert names, f"jax {jax.__version__} reported no {event} event: the program count needs another probe"
    return names


def _count(names, fun):
    """How many of the lowered programs are ``fun`` (named e.g. ``jit(fun)`` or ``jit_fun``)."""
    return sum(bool(re.search(rf"(?<![A-Za-z0-9]){fun}(?![A-Za-z0-9_])", name)) for name in names)


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX trainer")
@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_jax_fada_step_compiles_to_two_programs(steps_per_execution):
    with private("JAXTrainer: fit calls model.train_function(state, iterator)"):
        model = fx.tiny_fada()
        names = _compiled_programs(model, steps=4, steps_per_execution=steps_per_execution)
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4  # every batch, once
    counts = {
        fun: _count(names, fun) for fun in ("fada_source_gradients", "fada_target_update", "train_step")
    }
    assert counts == {"fada_source_gradients": 1, "fada_target_update": 1, "train_step": 0}, (
        f"FADA's JAX step must be two XLA programs (jax_two_pass.compiled_train_step), one each; "
        f"lowered: {names}"
    )


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX trainer")
def test_program_count_detects_a_one_program_step(monkeypatch):
    """The probe above sees Keras' default train function as one program, ``train_step``."""
    monkeypatch.setattr(keras_fada.FADA, "_jax_two_programs", lambda self: False)
    names = _compiled_programs(fx.tiny_fada(), steps=2)
    assert _count(names, "train_step") == 1, names
    assert _count(names, "fada_source_gradients") == _count(names, "fada_target_update") == 0, names


# ------------------------------------------------------------------ freeze_batch_norm (public API)
class _Wrapper(keras.layers.Layer):
    """A plain layer holding a BatchNorm in a list and one in a dict."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [keras.layers.Dense(2), keras.layers.BatchNormalization()]
        self.named = {"bn": keras.layers.BatchNormalization()}

    def call(self, x):
        return self.named["bn"](self.blocks[1](self.blocks[0](x)))


def _private_batch_norms(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda: deeplabv2_resnet_small(num_classes=3, frozen_bn=False),
        lambda: deeplabv2_resnet101(num_classes=19, frozen_bn=False),
        lambda: keras.Sequential([keras.Input((4,)), _Wrapper(), keras.layers.BatchNormalization()]),
    ],
    ids=["resnet_small", "resnet101", "nested_plain_layers"],
)
def test_freeze_batch_norm_reaches_every_batch_norm(build):
    model = build()
    private_bns = _private_batch_norms(model)
    assert private_bns and all(bn.trainable for bn in private_bns)
    assert {id(bn) for bn in batch_norm_layers(model)} == {id(bn) for bn in private_bns}
    assert len(batch_norm_layers(model)) == len(private_bns)
    freeze_batch_norm(model)
    assert not any(bn.trainable for bn in private_bns)


def test_every_private_symbol_is_tested():
    """Each PRIVATE_API entry is exercised by a ``with private(...)`` block of this file."""
    source = open(__file__, encoding="utf-8").read()
    untested = [symbol for symbol in ki.PRIVATE_API if f'"{symbol}"' not in source.split("def private(")[1]]
    assert not untested, f"keras_internals.PRIVATE_API entries without a test here: {untested}"
