"""FADA's training step on the torch backend in two backward passes, as the official loop.

Keras' torch trainer back-propagates one loss; for FADA that keeps every source activation
alive through the target pass. Here ``L_seg`` is back-propagated first (freeing the source
graph), then the target pass runs and ``lambda_adv * L_adv + L_D`` is back-propagated into the
same ``.grad`` buffers. Both losses are taken at the pre-update weights and the discriminator
sees the detached source features, so the summed gradients, and the update, equal the single
pass of ``FADA.compute_loss`` (tests/test_cross_backend.py checks it against TF and JAX).
"""

import keras
import torch


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    model.zero_grad()
    source = model.source_outputs(x, training=True)
    seg = model.source_loss(x, source)
    model.optimizer.scale_loss(seg).backward()
    # Only detached source tensors outlive the first backward pass.
    source = {k: v.detach() for k, v in source.items()}
    out = {**source, **model.target_outputs(x, source, training=True)}
    rest = model._with_layer_losses(model.target_loss(out))
    model.optimizer.scale_loss(rest).backward()
    model._loss_metric().update_state(seg.detach() + rest.detach(), sample_weight=x["source_images"].shape[0])
    weights = model.trainable_weights[:]
    with torch.no_grad():
        model.optimizer.apply([v.value.grad for v in weights], weights)
    return model.compute_metrics(x, y, out, sample_weight=sample_weight)
