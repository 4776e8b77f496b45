"""Backend-neutral tensor helpers that Keras core lacks.

`conv2d` is ``keras.ops.conv`` (channels-last, the layout of every keras-fada network) computed
on each backend's fastest kernel for the same sum; see its docstring for the measurements.

`resize_bilinear` exists because the official FADA code upsamples every logit map (classifier and
discriminator) with ``F.interpolate(..., mode="bilinear", align_corners=True)``, while
``keras.ops.image.resize`` only knows half-pixel centres. On released checkpoints the difference
is worth about 1.6 mIoU (AdaptSegNet#11), so both conventions are offered here.
"""

import functools

import keras
import numpy as np
from keras import ops


@functools.lru_cache(maxsize=256)
def interpolation_matrix(in_size, out_size, align_corners=True):
    """The (out_size, in_size) matrix of 1-D linear interpolation weights.

    Bilinear resizing is separable, so resizing an image is ``R_h @ x @ R_w^T``: two small
    GEMMs, which every backend differentiates and runs fast, instead of gathers.

    With ``align_corners=True`` output pixel ``i`` samples input coordinate
    ``i * (in - 1) / (out - 1)`` (PyTorch ``align_corners=True``); otherwise it samples
    ``(i + 0.5) * in / out - 0.5`` clamped to the image (half-pixel centres, as
    ``keras.ops.image.resize(..., antialias=False)``).
    """
    in_size, out_size = int(in_size), int(out_size)
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = i * scale
    else:
        src = np.clip((i + 0.5) * (in_size / out_size) - 0.5, 0.0, in_size - 1)
    lo = np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    matrix.setflags(write=False)
    return matrix


def resize_bilinear(x, size, align_corners=True):
    """Bilinearly resize a channels-last batch ``(N, H, W, C)`` to ``size = (height, width)``.

    Args:
        x: tensor of shape ``(N, H, W, C)`` with static spatial dimensions.
        size: the output ``(height, width)``.
        align_corners: ``True`` for the corner-aligned sampling grid of the official FADA code
            (PyTorch ``align_corners=True``), ``False`` for half-pixel centres (the convention of
            ``keras.ops.image.resize`` without antialiasing).

    Example:
    >>> logits = keras.random.normal((2, 65, 129, 19))
    >>> resize_bilinear(logits, (513, 1025)).shape
    (2, 513, 1025, 19)
    """
    in_h, in_w = x.shape[1], x.shape[2]
    out_h, out_w = int(size[0]), int(size[1])
    if in_h is None or in_w is None:
        raise ValueError(f"resize_bilinear needs static spatial dimensions, got shape {x.shape}")
    if (in_h, in_w) == (out_h, out_w):
        return x
    dtype = x.dtype
    if in_h != out_h:
        rows = ops.convert_to_tensor(interpolation_matrix(in_h, out_h, align_corners), dtype=dtype)
        x = ops.einsum("oh,nhwc->nowc", rows, x)
    if in_w != out_w:
        cols = ops.convert_to_tensor(interpolation_matrix(in_w, out_w, align_corners), dtype=dtype)
        x = ops.einsum("pw,nhwc->nhpc", cols, x)
    return x


def _pair(value):
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def conv2d(x, kernel, strides=1, padding="valid", dilation_rate=1):
    """``keras.ops.conv`` on a channels-last batch, routed to each backend's fastest kernel.

    The result is the same convolution (float summation order aside); only the kernel that
    computes it differs:

    * **JAX**: a 1x1 convolution is a matrix product over channels. XLA's CPU convolution
      gradients are 4-6x slower than the same FLOPs as a GEMM (1x1 1024->256 at 32x64, forward +
      both gradients: 120 ms as a convolution, 23 ms as a matmul), and ResNet-101 has 70 of them.
    * **torch**: Keras' channels-last ``conv`` copies every input to NCHW and back to
      channels-last memory, and oneDNN's channels-last kernels are slower here than NCHW (3x3
      64->64 at 64x128: 31 vs 18 ms forward + backward). This path hands ``conv2d`` an NCHW
      tensor (a free view when the input came from another ``conv2d``) and returns the result as
      an NHWC *view* of NCHW memory, so a network of these convolutions and elementwise ops runs
      in NCHW memory end to end, as the reference PyTorch code does, with no copies.
    * **TensorFlow**: ``keras.ops.conv`` (oneDNN, already the fastest here).

    Args:
        x: ``(N, H, W, C_in)``.
        kernel: ``(kh, kw, C_in, C_out)``, the Keras ``Conv2D`` layout.
        strides, padding, dilation_rate: as ``keras.ops.conv`` (``"valid"`` or ``"same"``).

    Example:
    >>> y = conv2d(keras.random.normal((1, 32, 64, 256)), keras.random.normal((3, 3, 256, 64)),
    ...            padding="same", dilation_rate=2)
    >>> y.shape
    (1, 32, 64, 64)
    """
    backend = keras.backend.backend()
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    s, d = _pair(strides), _pair(dilation_rate)
    if backend == "jax" and (kh, kw) == (1, 1) and d == (1, 1) and padding in ("valid", "same"):
        # A 1x1 kernel needs no padding under either convention; a stride only subsamples.
        if s != (1, 1):
            x = x[:, :: s[0], :: s[1], :]
        n, h, w, c = x.shape
        y = ops.matmul(ops.reshape(x, (-1, c)), ops.reshape(kernel, (c, kernel.shape[-1])))
        return ops.reshape(y, (n, h, w, kernel.shape[-1]))
    # PyTorch pads symmetrically; "same" with stride 1 and an odd kernel is that symmetric padding.
    symmetric = padding == "valid" or (s == (1, 1) and kh % 2 == 1 and kw % 2 == 1)
    if backend == "torch" and symmetric:
        return _torch_conv2d_nchw_memory(x, kernel, s, padding, d)
    return ops.conv(x, kernel, strides=s, padding=padding, dilation_rate=d)


def _torch_conv2d_nchw_memory(x, kernel, strides, padding, dilation):
    import torch.nn.functional as F

    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    if padding == "same":
        pad = (dilation[0] * (kernel.shape[0] // 2), dilation[1] * (kernel.shape[1] // 2))
    else:
        pad = 0
    # contiguous() is free for an NHWC view of NCHW memory (the output of this function).
    y = F.conv2d(
        x.permute(0, 3, 1, 2).contiguous(),
        kernel.permute(3, 2, 0, 1),
        stride=strides,
        padding=pad,
        dilation=dilation,
    )
    return y.permute(0, 2, 3, 1)
