"""Backend-neutral tensor helpers that Keras core lacks.

`conv2d` is ``keras.ops.conv`` (channels-last, the layout of every keras-fada network) computed
on each backend's fastest kernel for the same sum; see its docstring and docs/performance.md.

`resize_bilinear` exists because the official FADA code upsamples every logit map (classifier and
discriminator) with ``F.interpolate(..., mode="bilinear", align_corners=True)``, while
``keras.ops.image.resize`` only knows half-pixel centres. On released checkpoints the difference
is worth about 1.6 mIoU (AdaptSegNet#11), so both conventions are offered here.
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_fada.backend import fast_paths, tracing


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

    Static sizes use cached NumPy interpolation matrices; a size unknown at trace time (a
    TensorFlow retrace for a new image size sees ``None`` dims) builds them from tensors.

    Args:
        x: tensor of shape ``(N, H, W, C)``.
        size: the output ``(height, width)``: ints, or scalar tensors such as ``ops.shape(y)[1:3]``.
        align_corners: ``True`` for the corner-aligned sampling grid of the official FADA code
            (PyTorch ``align_corners=True``), ``False`` for half-pixel centres (the convention of
            ``keras.ops.image.resize`` without antialiasing).

    Example:
    >>> logits = keras.random.normal((2, 65, 129, 19))
    >>> resize_bilinear(logits, (513, 1025)).shape
    (2, 513, 1025, 19)
    """
    shape = ops.shape(x)
    in_h, in_w = _static_int(shape[1]), _static_int(shape[2])
    out_h, out_w = _static_int(size[0]), _static_int(size[1])
    if None in (in_h, in_w, out_h, out_w):
        return _resize_dynamic(x, (shape[1], shape[2]), size, align_corners)
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


def _static_int(value):
    """``value`` as a Python int when known at trace time, else ``None``."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Not int(): AutoGraph turns int() on a graph tensor into a cast.
        static = tf.get_static_value(value)
        return None if static is None else int(static)
    try:
        return int(value)  # an eager scalar tensor
    except Exception:  # a symbolic tensor: TypeError, or TensorFlow's OperatorNotAllowedInGraphError
        return None


def _resize_dynamic(x, in_size, out_size, align_corners):
    """``resize_bilinear`` for sizes known only at run time: the same matrices, built from tensors."""
    dtype = x.dtype
    rows = interpolation_matrix_tensor(in_size[0], out_size[0], align_corners, dtype)
    cols = interpolation_matrix_tensor(in_size[1], out_size[1], align_corners, dtype)
    x = ops.einsum("oh,nhwc->nowc", rows, x)
    return ops.einsum("pw,nhwc->nhpc", cols, x)


def interpolation_matrix_tensor(in_size, out_size, align_corners=True, dtype="float32"):
    """:func:`interpolation_matrix` computed with ``keras.ops`` from (possibly symbolic) sizes."""
    n_in = ops.cast(in_size, "float32")
    n_out = ops.cast(out_size, "float32")
    i = ops.cast(ops.arange(ops.cast(out_size, "int32")), "float32")
    if align_corners:
        src = i * ops.where(n_out > 1, (n_in - 1) / ops.maximum(n_out - 1, 1), 0.0)
    else:
        src = ops.clip((i + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lo = ops.clip(ops.floor(src), 0.0, n_in - 1)
    hi = ops.minimum(lo + 1, n_in - 1)
    frac = (src - lo)[:, None]
    grid = ops.cast(ops.arange(ops.cast(in_size, "int32")), "float32")[None, :]
    at_lo = ops.cast(ops.equal(grid, lo[:, None]), "float32")
    at_hi = ops.cast(ops.equal(grid, hi[:, None]), "float32")
    return ops.cast((1.0 - frac) * at_lo + frac * at_hi, dtype)


def in_place_if_donated(op, x, *args):
    """On torch, ``x`` overwritten with ``op`` (``"affine_"``, ``"relu_"`` or ``"add_"`` of
    ``keras_fada/backend/torch_in_place.py``) when ``FeatureExtractor`` donated it to the layer
    being called; ``None`` on other backends or when ``x`` may not be overwritten."""
    if keras.backend.backend() != "torch" or not fast_paths.enabled("torch_in_place", _dtype(x), x):
        return None
    from keras_fada.backend import torch_in_place

    return torch_in_place.if_donated(getattr(torch_in_place, op), x, *args)


def materialized_relu(x):
    """``max(x, 0)``; on JAX's CPU backend, computed once and alone kept for the backward pass.

    XLA's CPU fusion duplicates cheap elementwise producers into every elementwise consumer. In
    a ResNet the residual stream ``out_k = relu(bn3(conv3_k) + out_(k-1))`` is such a chain, so
    each block's output fusion recomputed the BN, add and ReLU of every earlier block of its
    stage (the fusion of layer3's last block read all 23 conv3 outputs): quadratic elementwise
    work, and every conv3 output kept alive. XLA never duplicates a fusion that holds an
    "expensive" op, so on JAX's CPU backend the output is divided by a runtime one (exact for
    every finite value; an inf becomes NaN). A literal 1.0 would be folded away, and
    ``lax.optimization_barrier`` is removed before XLA's CPU fusion runs.

    ``jax.nn.relu``'s gradient reads its input, which XLA would recompute in the backward pass
    from the conv output and the shortcut, keeping both alive. Here the gradient is
    ``dy * (y > 0)`` on the materialised output (as torch's and TensorFlow's ReLU gradients
    are), which the next convolution keeps anyway (``keras_fada/backend/jax_materialize.py``).
    Same values, same gradient (0 at 0) on every backend; other backends and XLA on GPUs run
    ``keras.ops.relu``. The FADA step on JAX gets faster and lighter (benchmarks/RESULTS.md).
    """
    if keras.backend.backend() == "jax" and fast_paths.enabled("jax_materialized_relu", _dtype(x)):
        from keras_fada.backend import jax_materialize

        return jax_materialize.materialized_relu(ops.convert_to_tensor(x))
    return ops.relu(x)


def _pair(value):
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def conv2d(x, kernel, strides=1, padding="valid", dilation_rate=1, bias=None):
    """``keras.ops.conv`` on a channels-last batch, routed to each backend's fastest kernel.

    The result is the same convolution (float summation order aside); only the kernel that
    computes it differs. Each route below runs only where ``keras_fada/backend/fast_paths.py``
    has it on (measured faster: today CPUs, not float16); elsewhere ``keras.ops.conv`` runs:

    * **JAX on the CPU**: 1x1 convolutions as GEMMs (``_pointwise_as_gemm``) and the weight
      gradient of stride-1 convolutions as per-tap GEMMs (``keras_fada/backend/jax_conv.py``),
      which XLA's CPU backend runs several times faster than its own convolution gradients. On a GPU,
      XLA's cuDNN convolutions stay.
    * **torch** (``keras_fada/backend/torch_conv.py``): NCHW memory behind NHWC views, so a
      network runs without Keras' two layout copies per convolution.
    * **TensorFlow**: ``keras.ops.conv`` (oneDNN), with three exceptions. Stride-1 "same"
      convolutions with at least 1024 input channels run as one GEMM over their taps
      (``_same_convolution_as_gemm``). Dilated convolutions with up to 256 input channels run
      without space-to-batch (``keras_fada/backend/tensorflow_conv.py``). In bfloat16, 1x1
      convolutions run as GEMMs: oneDNN's bf16 weight gradient of a 1x1 convolution costs
      several times its forward pass, the GEMM's about as much as its forward; in float32 the
      two are close either way, so the convolution stays.

    Args:
        x: ``(N, H, W, C_in)``.
        kernel: ``(kh, kw, C_in, C_out)``, the Keras ``Conv2D`` layout.
        strides, padding, dilation_rate: as ``keras.ops.conv`` (``"valid"`` or ``"same"``).
        bias: optional ``(C_out,)`` added to the output (inside the convolution on torch).

    Example:
    >>> y = conv2d(keras.random.normal((1, 32, 64, 256)), keras.random.normal((3, 3, 256, 64)),
    ...            padding="same", dilation_rate=2)
    >>> y.shape
    (1, 32, 64, 64)
    """
    s, d = _pair(strides), _pair(dilation_rate)
    pad = _symmetric_padding(kernel.shape[:2], s, padding, d)
    backend = keras.backend.backend()
    dtype = _dtype(x)

    def on(path):  # keras_fada/backend/fast_paths.py: where each path is on, and why
        return fast_paths.enabled(path, dtype, x)

    # The fast kernels take PyTorch's symmetric padding; asymmetric "same" stays on keras.ops.conv.
    if pad is not None and backend == "torch" and on("torch_nchw_conv"):
        from keras_fada.backend import torch_conv

        return torch_conv.conv2d(x, kernel, s, pad, d, bias=bias)
    pointwise = pad == (0, 0) and d == (1, 1) and tuple(kernel.shape[:2]) == (1, 1)
    if pointwise and (
        (backend == "jax" and on("jax_pointwise_gemm"))
        or (backend == "tensorflow" and dtype == "bfloat16" and on("tf_bf16_pointwise_gemm"))
    ):
        y = _pointwise_as_gemm(x, kernel, s)
    elif backend == "jax" and pad is not None and not pointwise and on("jax_tap_weight_gradient"):
        from keras_fada.backend import jax_conv

        x = ops.convert_to_tensor(x)
        y = jax_conv.conv2d(x, ops.convert_to_tensor(kernel, dtype=x.dtype), s, pad, d)
    elif backend == "tensorflow" and _wide_same_convolution(x, kernel, s, pad, d) and on("tf_wide_same_gemm"):
        y = _same_convolution_as_gemm(x, kernel, d)
    elif (
        backend == "tensorflow"
        and pad is not None
        and _tf_native_dilation(kernel, s, d)
        and (tracing.tracing() or on("tf_direct_dilation"))
    ):
        from keras_fada.backend import tensorflow_conv

        y = tensorflow_conv.dilated_conv2d(x, kernel, pad, d)
    else:
        y = ops.conv(x, kernel, strides=s, padding=padding, dilation_rate=d)
    return y if bias is None else y + bias


#: From this many input channels a stride-1 "same" k x k convolution runs as one GEMM on
#: TensorFlow (the discriminator's 2048->256 3x3; no convolution of the backbones).
WIDE_INPUT_CHANNELS = 1024


def _tf_native_dilation(kernel, strides, dilation):
    from keras_fada.backend import tensorflow_conv

    return tensorflow_conv.takes_native_dilation(kernel, strides, dilation)


def _wide_same_convolution(x, kernel, strides, pad, dilation):
    kh, kw, cin = (int(v) for v in kernel.shape[:3])
    if pad is None or strides != (1, 1) or (kh, kw) == (1, 1) or kh % 2 == 0 or kw % 2 == 0:
        return False
    same = pad == (dilation[0] * (kh // 2), dilation[1] * (kw // 2))
    static = x.shape[1] is not None and x.shape[2] is not None
    return same and static and cin >= WIDE_INPUT_CHANNELS


def _same_convolution_as_gemm(x, kernel, dilation):
    """A stride-1 zero-padded "same" convolution as one GEMM over all its taps, then shift-and-add.

    With thousands of input channels and a few hundred outputs, ``(HW, C_in) @ (C_in, k*k*C_out)``
    runs at the GEMM's speed where oneDNN's convolution in TensorFlow does not (the
    discriminator's first convolution, 2048->256), at the cost of the tap maps in memory. JAX's
    step gained nothing from it, so JAX keeps its convolution (benchmarks/RESULTS.md).
    """
    kh, kw, cin, cout = (int(v) for v in kernel.shape)
    offsets = [
        ((i - kh // 2) * dilation[0], (j - kw // 2) * dilation[1]) for i in range(kh) for j in range(kw)
    ]
    # One transpose, not a slice per tap: a slice's gradient is a scatter into a zero kernel.
    flat = ops.reshape(ops.transpose(kernel, (2, 0, 1, 3)), (cin, kh * kw * cout))
    return shifted_taps_sum(x, flat, offsets, cout)


def shifted_taps_sum(x, flat_kernel, offsets, filters):
    """``sum_t shift_t(x @ W_t)``: a stride-1 zero-padded convolution given by its taps.

    ``flat_kernel`` is ``(C_in, T * filters)``, the ``T`` tap kernels side by side; tap ``t``
    reads input pixel ``p + offsets[t]`` for output pixel ``p`` (zero outside the map). One
    ``(NHW, C_in)`` GEMM computes every tap; the map's height and width must be static.
    """
    height, width = int(x.shape[1]), int(x.shape[2])
    # A plain 2-D GEMM: XLA's CPU backend runs a dot with several contracting dimensions
    # (the weight gradient of a 4-D @ 2-D matmul) far slower than the same GEMM.
    taps = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), flat_kernel)
    # Unstacked rather than sliced: the gradient of a slice is a full-width zero tensor per
    # tap, the gradient of unstack one stack.
    taps = ops.unstack(ops.reshape(taps, (-1, height, width, len(offsets), filters)), axis=3)
    out = None
    for tap, (dy, dx) in zip(taps, offsets, strict=True):
        shifted = _shift(tap, dy, dx, height, width)
        out = shifted if out is None else out + shifted
    return out


def _shift(x, dy, dx, height, width):
    """``out[:, p, q] = x[:, p + dy, q + dx]``, zero where that falls outside the map."""
    x = x[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
    pads = [[0, 0], [max(-dy, 0), max(dy, 0)], [max(-dx, 0), max(dx, 0)], [0, 0]]
    return ops.pad(x, pads) if any(any(p) for p in pads) else x


def _dtype(x):
    return keras.backend.standardize_dtype(getattr(x, "dtype", None) or "float32")


def _pointwise_as_gemm(x, kernel, strides):
    """A 1x1 convolution as a ``(NHW, C_in) @ (C_in, C_out)`` GEMM (a stride subsamples first)."""
    if strides != (1, 1):
        x = x[:, :: strides[0], :: strides[1], :]
    shape = ops.shape(x)
    # A reshape, not kernel[0, 0]: a slice's gradient is a scatter into a zero tensor.
    y = ops.matmul(ops.reshape(x, (-1, shape[-1])), ops.reshape(ops.cast(kernel, x.dtype), kernel.shape[2:]))
    return ops.reshape(y, (shape[0], shape[1], shape[2], kernel.shape[-1]))


def store_conv2d_kernel(kernel, dtype=None):
    """Keeps a ``(kh, kw, C_in, C_out)`` kernel variable in the memory order ``conv2d`` reads.

    On torch the variable's memory becomes OIHW (same shape, values and checkpoints; only the
    strides differ), so no convolution copies its kernel and no backward pass copies its weight
    gradient (``keras_fada/backend/torch_conv.py``). Elsewhere nothing changes. Call it in
    ``build``, before the layer's variables are tracked, as ``keras_fada.layers.Conv2D`` does;
    ``dtype`` is the layer's compute dtype (default: the global policy's), which with the device
    decides the layout (``fast_paths``: where ``conv2d`` runs the NCHW path).
    """
    if keras.backend.backend() != "torch":
        return
    from keras_fada.backend import keras_internals, torch_conv

    dtype = dtype or keras.config.dtype_policy().compute_dtype
    if fast_paths.enabled("torch_nchw_conv", dtype, keras_internals.torch_parameter(kernel)):
        torch_conv.store_channels_first(kernel)


def match_variable_layout(variable, reference):
    """Gives an optimiser slot the memory layout of its weight (torch; elsewhere a no-op)."""
    if keras.backend.backend() == "torch":
        from keras_fada.backend import torch_conv

        torch_conv.match_layout(variable, reference)


def _symmetric_padding(kernel_size, strides, padding, dilation):
    """``(pad_h, pad_w)`` when ``padding`` equals PyTorch's symmetric zero padding, else ``None``.

    ``"valid"`` is ``(0, 0)``; ``"same"`` is ``dilation * (k // 2)`` per side for an odd kernel at
    stride 1 (otherwise "same" pads asymmetrically).
    """
    kh, kw = int(kernel_size[0]), int(kernel_size[1])
    if padding == "valid":
        return (0, 0)
    if padding == "same" and strides == (1, 1) and kh % 2 == 1 and kw % 2 == 1:
        return (dilation[0] * (kh // 2), dilation[1] * (kw // 2))
    return None
