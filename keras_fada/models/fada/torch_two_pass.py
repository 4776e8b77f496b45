"""FADA's training step on the torch backend in two backward passes, as the official loop.

Keras' torch trainer back-propagates one loss; for FADA that keeps every source activation
alive through the target pass. Here the source pass (``L_seg``, D's source term) is
back-propagated first (freeing the source graph), then the target pass runs and
``lambda_adv * L_adv`` + D's target term is back-propagated; the gradients are combined over
micro-batches and ``torchrun`` processes by ``accumulation.py``. Both losses are taken at the pre-update weights and the discriminator
sees the detached source features, so the summed gradients, and the update, equal the single
pass of ``FADA.compute_loss`` (tests/test_cross_backend.py checks it against TF and JAX).
"""

import keras
import torch

from keras_fada.models.fada import accumulation


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce_sum(x):
    """``x`` summed over the processes of the ``torch.distributed`` group (torchrun)."""
    if _distributed() and torch.distributed.get_world_size() > 1:
        x = x.clone()
        torch.distributed.all_reduce(x)
    return x


def train_step(model, data):
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    weights = model.trainable_weights[:]
    groups = [model.pass_groups(i) for i in range(len(model.pass_names))]
    state = None
    for micro_x, micro_y in accumulation.micro_batches((x, y), model.accumulation_steps):
        for index in range(len(model.pass_names)):
            model.zero_grad()
            terms, loss = model.pass_terms(index, micro_x, micro_y)
            # Back-propagated at once: only the loss terms outlive a pass.
            model.optimizer.scale_loss(loss).backward()
            del loss
            terms = keras.tree.map_structure(lambda t: t.detach() if torch.is_tensor(t) else t, terms)
            with torch.no_grad():
                state = accumulation.merge(
                    state, index, [v.value.grad for v in weights], terms, groups[index]
                )
    model.zero_grad()
    with torch.no_grad():
        grads, means = accumulation.finish(state, groups, all_reduce_sum)
        if _distributed() and torch.distributed.get_world_size() > 1:
            # Each process holds its share of the whole batch's gradient (DDP's all-reduce,
            # done here because the step calls the sub-models directly, not a DDP wrapper).
            pending = [torch.distributed.all_reduce(g, async_op=True) for g in grads if g is not None]
            for work in pending:
                work.wait()
        total = model.update_loss_metrics(means)
        model._loss_metric().update_state(total, sample_weight=keras.tree.flatten(x)[0].shape[0])
        model.optimizer.apply(grads, weights)
        accumulation.average_moving_statistics(model, all_reduce_sum)
    return model.get_metrics_result()
