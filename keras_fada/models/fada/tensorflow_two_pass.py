"""FADA's training step on TensorFlow in two backward passes, as the official loop.

As ``torch_two_pass``: the source pass (``L_seg`` and D's source term) is differentiated
first, then the target pass runs and ``lambda_adv * L_adv`` + D's target term is differentiated,
and the two gradients are summed before one optimiser step (over the micro-batches and
replicas of ``accumulation.py``). In a graph, program order is not execution order, so the target pass is built
under a control dependency on the source gradients: TensorFlow can then free the source
activations before the target ones exist. Same gradients as the single pass of
``FADA.compute_loss`` (tests/test_fada.py, tests/test_cross_backend.py).
"""

import keras
import tensorflow as tf

from keras_fada.models.fada import accumulation


def all_reduce_sum(x):
    """``x`` summed over the replicas of the current ``tf.distribute`` strategy."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def train_step(model, data):
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    weights = model.trainable_weights
    state, after = None, []
    for micro_x, micro_y in accumulation.micro_batches((x, y), model.accumulation_steps):
        for index in range(len(model.pass_names)):
            # Each pass is built after the previous one's gradients: TensorFlow can then free
            # one pass's activations before the next pass's exist.
            with tf.control_dependencies(after):
                with tf.GradientTape() as tape:
                    terms, loss = model.pass_terms(index, micro_x, micro_y)
                    scaled = model.optimizer.scale_loss(loss)
                grads = tape.gradient(scaled, weights)
                terms = tf.nest.map_structure(tf.stop_gradient, terms)
            state = accumulation.merge(state, index, grads, terms, model.pass_groups(index))
            after = [g for g in state["grads"][f"pass{index}"] if g is not None]
    groups = [model.pass_groups(i) for i in range(len(model.pass_names))]
    # The strategy's optimiser sums the replicas' gradients: each replica gives its share.
    grads, means = accumulation.finish(state, groups, all_reduce_sum)
    total = model.update_loss_metrics(means)
    model._loss_metric().update_state(total, sample_weight=tf.shape(keras.tree.flatten(x)[0])[0])
    model.optimizer.apply(_overflow_everywhere(model, grads), weights)
    accumulation.average_moving_statistics(model, all_reduce_sum)
    return model.get_metrics_result()


def _overflow_everywhere(model, grads):
    """Under a strategy, dynamic loss scaling skips the step where any replica's gradients
    overflowed: Keras' wrapper checks each replica's own gradients before the strategy sums them
    (and then follows the first replica's verdict), so an overflow is made visible to all."""
    ctx = tf.distribute.get_replica_context()
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if not scaled or ctx is None or ctx.num_replicas_in_sync == 1:
        return grads
    present = [g for g in grads if g is not None]
    local = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])
    overflows = all_reduce_sum(tf.cast(tf.logical_not(local), "float32"))
    first = next(i for i, g in enumerate(grads) if g is not None)
    nan = tf.constant(float("nan"), grads[first].dtype)
    poison = tf.where(overflows > 0, nan, tf.zeros((), grads[first].dtype))
    return [g + poison if i == first else g for i, g in enumerate(grads)]
