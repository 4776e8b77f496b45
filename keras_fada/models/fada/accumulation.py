"""One optimiser step from parts of a batch (micro-batches, devices) that equals the step of the
whole batch: gradient accumulation and data parallel, with losses normalised by global counts.

A training step is a sequence of passes (FADA: the source pass, then the target pass; a
segmentation trainer: one pass). Each pass returns its loss terms as ``(mean, count)``: the
mean over the pixels it averages (valid labels, confident pixels in hard mode) and their
number. Each trainable variable's gradient in a pass belongs to one term (FADA's source pass:
F and C to ``seg``, D to ``d_source``), whose count weights it. Over the micro-batches of one
device, ``merge`` keeps count-weighted running means of the terms and of every pass's
gradients; ``finish`` then scales them by ``local count / global count`` (the counts summed
over devices by the backend's ``all_reduce_sum``), so that summing the devices' gradients gives
the gradient of the whole batch's loss, mean over *all* its pixels. On one device with one
micro-batch every factor is exactly 1: the step is bit-for-bit the plain step.

Backend-neutral (``keras.ops``); the per-backend steps are ``{tensorflow,torch,jax}_two_pass.py``.
"""

import math

import keras
from keras import ops


def micro_batches(data, steps, groups=1):
    """``data`` (a nest of arrays with the batch first) split into ``steps`` micro-batches.

    With ``groups`` > 1 (JAX: the devices that share the batch axis of a global array), the
    batch is seen as ``groups`` blocks and micro-batch ``i`` takes the ``i``-th part of every
    block, so that each device keeps its own rows.
    """
    if steps == 1:
        return [data]

    def part(x, i):
        if x is None:
            return None
        if x.shape[0] is not None and x.shape[0] % (groups * steps):
            raise ValueError(
                f"a batch of {x.shape[0]} does not split into {groups} devices x {steps} micro-batches"
            )
        if groups == 1:
            size = ops.shape(x)[0] // steps
            return x[i * size : (i + 1) * size]
        shape = tuple(x.shape)
        blocks = ops.reshape(x, (groups, steps, shape[0] // (groups * steps), *shape[1:]))
        return ops.reshape(blocks[:, i], (shape[0] // steps, *shape[1:]))

    return [keras.tree.map_structure(lambda x, i=i: part(x, i), data) for i in range(steps)]


def backend_step():
    """The module with this backend's split ``train_step`` (``{tensorflow,torch,jax}_two_pass``)."""
    import importlib

    return importlib.import_module(f"keras_fada.models.fada.{keras.backend.backend()}_two_pass")


def _ratio(part, whole):
    return part / ops.maximum(whole, ops.ones_like(whole))


def merge(state, index, grads, terms, groups):
    """Adds pass ``index`` of one micro-batch to ``state`` (``None`` at the first micro-batch).

    Args:
        grads: one gradient (or ``None``) per trainable variable.
        terms: ``{name: (mean, count)}`` of the pass, detached.
        groups: per trainable variable, the term whose count weights its gradient.
    Returns:
        The new state ``{"counts", "means", "grads"}`` (a nest of arrays).
    """
    state = state or {"counts": {}, "means": {}, "grads": {}}
    counts, means, acc_grads = dict(state["counts"]), dict(state["means"]), dict(state["grads"])
    old_weight, new_weight = {}, {}
    for name, (mean, count) in terms.items():
        mean, count = ops.cast(mean, "float32"), ops.cast(count, "float32")
        if name in counts:
            total = counts[name] + count
            old_weight[name] = _ratio(counts[name], total)
            new_weight[name] = _ratio(count, total)
            means[name] = means[name] * old_weight[name] + mean * new_weight[name]
        else:
            total = count
            new_weight[name] = _ratio(count, total)
            means[name] = mean * new_weight[name]
        counts[name] = total
    key = f"pass{index}"
    acc = acc_grads.get(key)
    merged = []
    for i, (grad, group) in enumerate(zip(grads, groups, strict=True)):
        if grad is None:
            merged.append(None if acc is None else acc[i])
            continue
        grad = grad * ops.cast(new_weight[group], grad.dtype)
        if acc is not None and acc[i] is not None:
            grad = acc[i] * ops.cast(old_weight[group], grad.dtype) + grad
        merged.append(grad)
    acc_grads[key] = merged
    return {"counts": counts, "means": means, "grads": acc_grads}


def finish(state, groups_per_pass, all_reduce_sum=None):
    """``(grads, means)``: this device's share of the whole batch's gradients (to be summed
    over devices, as a distribution strategy's optimiser does) and the global loss means.

    ``all_reduce_sum`` sums a float32 vector over devices (``None``: one device, or arrays
    that are already global as under JAX's sharding)."""
    names = sorted(state["counts"])
    local = ops.stack([state["counts"][n] for n in names])
    total = local if all_reduce_sum is None else all_reduce_sum(local)
    ratio = {n: _ratio(local[i], total[i]) for i, n in enumerate(names)}
    shares = ops.stack([state["means"][n] * ratio[n] for n in names])
    shares = shares if all_reduce_sum is None else all_reduce_sum(shares)
    means = {n: shares[i] for i, n in enumerate(names)}
    grads = None
    for index, groups in enumerate(groups_per_pass):
        acc = state["grads"][f"pass{index}"]
        scaled = [
            None if g is None else g * ops.cast(ratio[grp], g.dtype)
            for g, grp in zip(acc, groups, strict=True)
        ]
        grads = scaled if grads is None else [_add(a, b) for a, b in zip(grads, scaled, strict=True)]
    return grads, means


def average_moving_statistics(model, all_reduce_sum):
    """Replaces the moving means and variances of ``model``'s trainable ``BatchNormalization`` layers
    (which a training-mode pass updates outside the optimiser, each device from its own rows) by
    their mean over the devices, so that every device keeps the same model. For the TensorFlow and
    torch steps, with their ``all_reduce_sum``; JAX's arrays are global (one update from the whole
    batch)."""
    from keras_fada.models.deeplabv2.normalization import batch_norm_layers
    from keras_fada.training.distribute import replicas

    devices = replicas()
    stats = [
        v
        for layer in batch_norm_layers(model)
        if layer.trainable
        for v in (layer.moving_mean, layer.moving_variance)
    ]
    if devices == 1 or not stats:
        return
    flat = ops.concatenate([ops.reshape(ops.cast(v.value, "float32"), (-1,)) for v in stats])
    flat = all_reduce_sum(flat) / devices
    start = 0
    for v in stats:
        size = math.prod(v.shape)
        v.assign(ops.cast(ops.reshape(flat[start : start + size], v.shape), v.dtype))
        start += size


def _add(a, b):
    return b if a is None else a if b is None else a + b
