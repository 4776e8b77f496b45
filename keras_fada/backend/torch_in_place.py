"""Elementwise layers computed in place on torch, for tensors that nothing else will read.

The reference PyTorch ResNet (torchvision's ``Bottleneck``) runs its ReLUs with ``inplace=True``
and adds the shortcut with ``out += identity``; Keras layers allocate a new tensor for every
frozen BatchNorm (two: the product, then the sum), ReLU and Add. In an eager ResNet-101 that is
ten activation-sized allocations per bottleneck instead of the three convolution outputs, and
glibc's heap fragments under that churn, so the process holds far more memory than its live
tensors (docs/performance.md; figures in benchmarks/RESULTS.md).

``FeatureExtractor`` *donates* a layer's first input when that layer is its last reader
(``donating``); ``FrozenBatchNormalization``, ``ReLU`` and ``Add`` then overwrite it
(``affine_``, ``relu_``, ``add_``). The values and gradients are the same: the frozen BatchNorm's
``x * s + b`` saves only ``s`` for the backward pass, the shortcut add saves nothing, and the
ReLU keeps its output either way; autograd's version counters raise, never miscompute, if an
overwritten tensor was saved by something else. A channels-last view of channels-first memory
(what ``keras_fada.ops.conv2d`` returns on torch) is overwritten through its base: an in-place
op on a view is recorded as ``CopySlices``, whose backward copies the whole gradient.
"""

import contextlib
import threading

import torch

_donated = threading.local()


@contextlib.contextmanager
def donating(tensor):
    """Within the block, the layer being called may overwrite ``tensor`` (its first input)."""
    previous = getattr(_donated, "tensor", None)
    _donated.tensor = tensor
    try:
        yield
    finally:
        _donated.tensor = previous


def if_donated(op, x, *args):
    """``op(x, *args)`` (one of ``affine_``, ``relu_``, ``add_``) when ``x`` is the donated tensor
    and can be overwritten; otherwise ``None`` (the caller computes out of place)."""
    if x is None or getattr(_donated, "tensor", None) is not x:
        return None
    return op(x, *args)


def shares_memory(x, others):
    """Whether ``x`` shares storage with any tensor of ``others`` (a layer may return its input
    or a view of it, so two graph tensors can be one buffer)."""
    if not isinstance(x, torch.Tensor):
        return True
    ptr = x.untyped_storage().data_ptr()
    return any(isinstance(y, torch.Tensor) and y.untyped_storage().data_ptr() == ptr for y in others)


def _writable(x):
    """``(target, channel_axis)``: ``x`` itself, or the contiguous NCHW base of which ``x`` is the
    NHWC view; ``(None, None)`` when ``x`` cannot be overwritten safely."""
    if not isinstance(x, torch.Tensor) or (x.is_leaf and x.requires_grad):
        return None, None
    base = x._base
    if base is None:  # any strides: the ops below broadcast over logical axes
        return x, x.dim() - 1
    if base.is_leaf and base.requires_grad:
        return None, None
    if (
        base.dim() == 4
        and base.is_contiguous()
        and x.storage_offset() == base.storage_offset()
        and x.shape == base.permute(0, 2, 3, 1).shape
        and x.stride() == base.permute(0, 2, 3, 1).stride()
    ):
        return base, 1
    return None, None


def _like_input(target, x):
    return target if target is x else target.permute(0, 2, 3, 1)


def affine_(x, scale, shift):
    """``x * scale + shift`` over the channel (last) axis, in ``x``'s memory; ``None`` if ``x``
    cannot be overwritten. ``scale`` and ``shift`` must not require gradients."""
    target, axis = _writable(x)
    if target is None or scale.requires_grad or shift.requires_grad:
        return None
    shape = [1] * target.dim()
    shape[axis] = -1
    target.mul_(scale.reshape(shape)).add_(shift.reshape(shape))
    return _like_input(target, x)


def relu_(x):
    target, _ = _writable(x)
    if target is None:
        return None
    target.relu_()
    return _like_input(target, x)


def add_(x, y):
    """``x + y`` in ``x``'s memory (same shapes); ``None`` if ``x`` cannot be overwritten."""
    target, _ = _writable(x)
    if target is None or not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype:
        return None
    target.add_(y if target is x else y.permute(0, 3, 1, 2))
    return _like_input(target, x)
