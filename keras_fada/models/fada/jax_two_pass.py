"""FADA's stateless training step on JAX in two backward passes, as the official loop.

Keras' JAX trainer compiles one program per step, and inside one XLA program the source and
target passes are interleaved: XLA's CPU scheduler ran both forward passes side by side and
kept every source activation alive through the target pass (``optimization_barrier`` does not
order scheduling: XLA removes it before scheduling). Here the step is two XLA programs:

1. ``source_gradients``: the source pass and the gradients of ``L_seg``;
2. ``target_update``: the target pass, the gradients of ``lambda_adv * L_adv + L_D``, their sum
   with the source gradients, one optimiser step.

Between them only the source gradients and the detached source outputs (features, logits,
``a_s``) stay alive, so the source activations are freed before the target ones exist, as in
the official loop and the torch/TensorFlow two-pass steps. The update equals the single pass
of ``FADA.compute_loss`` (tests/test_fada.py, tests/test_cross_backend.py).
"""

import jax
import keras

from keras_fada.models.fada import accumulation


def _stateless(model, variables, fn):
    """Runs ``fn()`` with the model's variables bound to ``variables`` = (trainable,
    non-trainable, metrics, optimizer) values; returns its result and the new non-trainable
    and metrics values."""
    trainable, non_trainable, metrics, optimizer = variables
    mapping = [
        *zip(model.trainable_variables, trainable, strict=True),
        *zip(model.non_trainable_variables, non_trainable, strict=True),
        *zip(model.metrics_variables, metrics, strict=True),
        *zip(model.optimizer.variables, optimizer, strict=True),
    ]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = fn()
    non_trainable = [scope.get_current_value(v) for v in model.non_trainable_variables]
    metrics = [scope.get_current_value(v) for v in model.metrics_variables]
    return result, non_trainable, metrics


def _pass(model, index, state, acc, micro):
    """Pass ``index`` on one micro-batch: its gradients merged into ``acc`` (accumulation.py);
    returns ``(acc, non_trainable)``, the BatchNorm values after the pass."""
    trainable, non_trainable, optimizer_vars, metrics = state
    micro_x, micro_y = micro

    def objective(trainable):
        def fn():
            terms, loss = model.pass_terms(index, micro_x, micro_y)
            return model.optimizer.scale_loss(loss), terms

        (scaled, terms), non_trainable_, _ = _stateless(
            model, (trainable, non_trainable, metrics, optimizer_vars), fn
        )
        return scaled, (terms, non_trainable_)

    (_, (terms, non_trainable)), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
    terms = jax.lax.stop_gradient(terms)
    return accumulation.merge(acc, index, grads, terms, model.pass_groups(index)), non_trainable


def _update(model, trainable, non_trainable, optimizer_vars, metrics, acc, batch_size):
    """The optimiser step from the accumulated gradients, and the metric updates: ``(logs, state)``."""
    groups = [model.pass_groups(i) for i in range(len(model.pass_names))]
    grads, means = accumulation.finish(acc, groups)  # the arrays are global under a sharding
    trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
    mapping = list(zip(model.metrics_variables, metrics, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        total = model.update_loss_metrics(means)
        model._loss_metric().update_state(total, sample_weight=batch_size)
        logs = model.get_metrics_result()
    metrics = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, optimizer_vars, metrics)


def _groups():
    """The devices that share the batch axis under the current ``keras.distribution`` (1: none)."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return int(mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)])


def _micro_batches(model, data):
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    return accumulation.micro_batches((x, y), model.accumulation_steps, _groups()), keras.tree.flatten(x)[0]


def train_step(model, state, data):
    """The whole step as one function (what ``run_eagerly`` or an outer ``jax.jit`` sees)."""
    trainable, non_trainable, optimizer_vars, metrics = state
    micro, first = _micro_batches(model, data)
    acc = None
    for part in micro:
        for index in range(len(model.pass_names)):
            acc, non_trainable = _pass(
                model, index, (trainable, non_trainable, optimizer_vars, metrics), acc, part
            )
    return _update(model, trainable, non_trainable, optimizer_vars, metrics, acc, first.shape[0])


def compiled_train_step(model):
    """``train_step`` as one XLA program per pass and micro-batch, in sequence: ``fada_source_gradients``
    and ``fada_target_update`` (the last pass, with the optimiser step, which consumes (donates)
    the weights and the optimiser slots); with ``accumulation_steps`` > 1 also
    ``fada_target_gradients`` for the other micro-batches. BatchNorm and metric values pass through
    as the very buffers of the state, so they are not donated. tests/test_keras_internals.py
    counts the compilations by their names. Under a ``keras.distribution`` the programs run on
    the sharded arrays (XLA inserts the all-reduces); the state keeps its shardings."""
    names = model.pass_names

    def named(fn, name):
        fn.__name__ = fn.__qualname__ = name
        return fn

    passes = [
        jax.jit(
            named(lambda state, acc, micro, i=i: _pass(model, i, state, acc, micro), f"fada_{n}_gradients")
        )
        for i, n in enumerate(names)
    ]

    def last(trainable, optimizer_vars, non_trainable, metrics, acc, micro, batch_size):
        acc, non_trainable = _pass(
            model, len(names) - 1, (trainable, non_trainable, optimizer_vars, metrics), acc, micro
        )
        return _update(model, trainable, non_trainable, optimizer_vars, metrics, acc, batch_size)

    out_shardings = None
    if keras.distribution.distribution() is not None:
        shardings = [
            [v.value.sharding for v in variables]
            for variables in (
                model.trainable_variables,
                model.non_trainable_variables,
                model.optimizer.variables,
                model.metrics_variables,
            )
        ]
        out_shardings = (None, tuple(shardings))
    update = jax.jit(
        named(last, f"fada_{names[-1]}_update"),
        donate_argnums=(0, 1),
        static_argnums=(6,),
        out_shardings=out_shardings,
    )

    def step(state, data):
        trainable, non_trainable, optimizer_vars, metrics = state
        micro, first = _micro_batches(model, data)
        acc = None
        for k, part in enumerate(micro):
            for index in range(len(names)):
                if k == len(micro) - 1 and index == len(names) - 1:
                    break
                acc, non_trainable = passes[index](
                    (trainable, non_trainable, optimizer_vars, metrics), acc, part
                )
        return update(trainable, optimizer_vars, non_trainable, metrics, acc, micro[-1], int(first.shape[0]))

    return step
