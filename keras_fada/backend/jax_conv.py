"""Convolutions on JAX in the forms XLA's CPU backend runs fast; the maths is ``lax.conv``'s.

On the CPU, XLA's convolution *weight* gradient costs several times its forward pass, and its 1x1
convolutions are slower than the same GEMM. So a 1x1 convolution is a GEMM over channels
(``keras_fada.ops._pointwise_as_gemm``, shared with TensorFlow's bfloat16 route), and a stride-1
k x k convolution keeps XLA's forward and input gradient but takes its weight gradient as k*k
GEMMs ``x_shift^T @ dy``. With few output channels (the ASPP and discriminator heads) the GEMMs
are too thin and XLA's own gradient stays. The taps run in a ``lax.scan`` so that one shifted
window exists at a time (unrolled, XLA materialises them all together). Why and how much:
docs/performance.md and benchmarks/RESULTS.md.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Below this many output channels the per-tap GEMMs lose to XLA's weight gradient (see above).
MIN_TAP_GRADIENT_FILTERS = 32


def conv2d(x, kernel, strides, padding, dilation):
    """Channels-last ``keras.ops.conv`` (not 1x1: see ``keras_fada.ops``) with symmetric zero
    ``padding``; all three are pairs."""
    kh, kw = kernel.shape[:2]
    same = padding == (dilation[0] * (kh // 2), dilation[1] * (kw // 2))
    if strides == (1, 1) and same and kernel.shape[-1] >= MIN_TAP_GRADIENT_FILTERS:
        return _same_conv_tap_gradient(x, kernel, padding, dilation)
    return _xla_conv(x, kernel, strides, padding, dilation)


def _xla_conv(x, kernel, strides, padding, dilation):
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        [(padding[0],) * 2, (padding[1],) * 2],
        rhs_dilation=dilation,
        dimension_numbers=_DIMENSIONS,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _same_conv_tap_gradient(x, kernel, padding, dilation):
    return _xla_conv(x, kernel, (1, 1), padding, dilation)


def _forward(x, kernel, padding, dilation):
    return _xla_conv(x, kernel, (1, 1), padding, dilation), (x, kernel)


def _backward(padding, dilation, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda t: _xla_conv(t, kernel, (1, 1), padding, dilation), x)
    (dx,) = input_vjp(dy)
    kh, kw, cin, cout = kernel.shape
    ph, pw = padding
    padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    height, width = dy.shape[1:3]
    flat_dy = dy.reshape(-1, cout)
    offsets = jnp.array([(i * dilation[0], j * dilation[1]) for i in range(kh) for j in range(kw)])

    def tap(_, offset):
        window = lax.dynamic_slice(padded, (0, offset[0], offset[1], 0), (x.shape[0], height, width, cin))
        grad = lax.dot_general(
            window.reshape(-1, cin), flat_dy, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        return None, grad

    _, taps = lax.scan(tap, None, offsets)
    dkernel = taps.reshape(kernel.shape).astype(kernel.dtype)
    return dx, dkernel


_same_conv_tap_gradient.defvjp(_forward, _backward)
