"""FADA's training step on TensorFlow in two backward passes, as the official loop.

As ``torch_two_pass``: ``L_seg`` is differentiated first, then the target pass runs and
``lambda_adv * L_adv + L_D`` is differentiated, and the two gradients are summed before one
optimiser step. In a graph, program order is not execution order, so the target pass is built
under a control dependency on the source gradients: TensorFlow can then free the source
activations before the target ones exist. Same gradients as the single pass of
``FADA.compute_loss`` (tests/test_fada.py, tests/test_cross_backend.py).
"""

import keras
import tensorflow as tf


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weights = model.trainable_weights
    with tf.GradientTape() as tape:
        source = model.source_outputs(x, training=True)
        seg = model.source_loss(x, source)
        scaled = model.optimizer.scale_loss(seg)
    source_grads = tape.gradient(scaled, weights)
    with tf.control_dependencies([g for g in source_grads if g is not None]):
        source = {k: tf.stop_gradient(tf.identity(v)) for k, v in source.items()}
        with tf.GradientTape() as tape:
            out = {**source, **model.target_outputs(x, source, training=True)}
            rest = model._with_layer_losses(model.target_loss(out))
            scaled = model.optimizer.scale_loss(rest)
        target_grads = tape.gradient(scaled, weights)
    grads = [
        a if b is None else b if a is None else a + b for a, b in zip(source_grads, target_grads, strict=True)
    ]
    model._loss_metric().update_state(seg + rest, sample_weight=tf.shape(x["source_images"])[0])
    model.optimizer.apply(grads, weights)
    return model.compute_metrics(x, y, out, sample_weight=sample_weight)
