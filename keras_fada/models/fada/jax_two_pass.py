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


def _gradients(model, state, loss_fn):
    """Gradients of ``loss_fn() -> (loss, aux)`` with respect to the trainable variables."""
    trainable, non_trainable, optimizer_vars, metrics = state

    def scaled_loss(trainable):
        def fn():
            loss, aux = loss_fn()
            return model.optimizer.scale_loss(loss), (loss, aux)

        (scaled, (loss, aux)), non_trainable_, metrics_ = _stateless(
            model, (trainable, non_trainable, metrics, optimizer_vars), fn
        )
        return scaled, (loss, aux, non_trainable_, metrics_)

    (_, (loss, aux, non_trainable, metrics)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(trainable)
    return grads, loss, aux, (trainable, non_trainable, optimizer_vars, metrics)


def source_gradients(model, state, data):
    """Program 1: ``(source_grads, seg_loss, source_outputs, non_trainable, metrics)``, the last
    two being the state's BatchNorm and metric values after the source pass."""
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)

    def loss_fn():
        source = model.source_outputs(x, training=True)
        return model.source_loss(x, source), source

    grads, seg, source, (_, non_trainable, _, metrics) = _gradients(model, state, loss_fn)
    return grads, seg, jax.lax.stop_gradient(source), non_trainable, metrics


def target_update(model, trainable, optimizer_vars, source_result, data):
    """Program 2: the target pass, the summed gradients and the optimiser step: ``(logs, state)``."""
    source_grads, seg, source, non_trainable, metrics = source_result
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    def loss_fn():
        out = {**source, **model.target_outputs(x, source, training=True)}
        return model._with_layer_losses(model.target_loss(out)), out

    state = (trainable, non_trainable, optimizer_vars, metrics)
    target_grads, rest, out, (trainable, non_trainable, optimizer_vars, metrics) = _gradients(
        model, state, loss_fn
    )
    grads = keras.tree.map_structure(lambda a, b: a + b, source_grads, target_grads)
    trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
    logs, metrics = _update_metrics(model, metrics, seg + rest, x, y, out, sample_weight)
    return logs, (trainable, non_trainable, optimizer_vars, metrics)


def _update_metrics(model, metrics, loss, x, y, out, sample_weight):
    """The stateless metric update of a Keras step: ``loss`` into the ``"loss"`` metric, then
    ``compute_metrics``; returns the logs and the new metric values."""
    mapping = list(zip(model.metrics_variables, metrics, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model._loss_metric().update_state(loss, sample_weight=x["source_images"].shape[0])
        logs = model.compute_metrics(x, y, out, sample_weight)
    return logs, [scope.get_current_value(v) for v in model.metrics_variables]


def train_step(model, state, data):
    """The whole step as one function (what ``run_eagerly`` or an outer ``jax.jit`` sees)."""
    trainable, _, optimizer_vars, _ = state
    return target_update(model, trainable, optimizer_vars, source_gradients(model, state, data), data)


def compiled_train_step(model):
    """``train_step`` as two XLA programs; the second consumes (donates) the weights and the
    optimiser slots. BatchNorm and metric values pass through program 1, possibly as the very
    buffers of the state, so they are not donated. tests/test_keras_internals.py counts the
    compilations of the two by their names."""

    def fada_source_gradients(state, data):
        return source_gradients(model, state, data)

    def fada_target_update(trainable, optimizer_vars, source_result, data):
        return target_update(model, trainable, optimizer_vars, source_result, data)

    source = jax.jit(fada_source_gradients)
    target = jax.jit(fada_target_update, donate_argnums=(0, 1))

    def step(state, data):
        trainable, _, optimizer_vars, _ = state
        return target(trainable, optimizer_vars, source(state, data), data)

    return step
