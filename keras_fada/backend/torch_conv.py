"""Convolutions on torch in NCHW memory behind channels-last (NHWC) views.

Keras' channels-last ``conv`` on torch copies every input to NCHW and then to channels-last
memory, and oneDNN's channels-last kernels are slower than its NCHW ones (docs/performance.md).
This one hands ``conv2d`` an NCHW tensor (a free view when the input came from another
convolution of this module, through any elementwise ops) and returns the result as an NHWC view
of NCHW memory, so a network of these convolutions runs in NCHW memory end to end, as the
reference PyTorch code does.
"""

import torch
import torch.nn.functional as F
from keras import ops

from keras_fada.backend.keras_internals import set_torch_parameter, torch_parameter


def conv2d(x, kernel, strides, padding, dilation, bias=None):
    """Channels-last ``keras.ops.conv`` with symmetric zero ``padding``; all three are pairs."""
    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    if bias is not None:
        bias = ops.convert_to_tensor(bias, dtype=x.dtype)
    # contiguous() is free for an NHWC view of NCHW memory, i.e. this function's output.
    y = F.conv2d(
        x.permute(0, 3, 1, 2).contiguous(),
        kernel.permute(3, 2, 0, 1),
        bias,
        stride=strides,
        padding=padding,
        dilation=dilation,
    )
    return y.permute(0, 2, 3, 1)


def _replace_parameter(variable, tensor):
    # Before the owning layer tracks its parameters (after build()), so that the layer's
    # torch_params, zero_grad() and the optimisers all hold this one Parameter.
    requires_grad = torch_parameter(variable).requires_grad
    set_torch_parameter(variable, torch.nn.Parameter(tensor, requires_grad=requires_grad))


def store_channels_first(kernel):
    """Keeps a ``(kh, kw, C_in, C_out)`` kernel variable in OIHW memory, as ``F.conv2d`` reads it.

    Same shape and values; only the strides change. Otherwise every ``conv2d`` call copies the
    kernel to OIHW (interleaved with the activations, which fragments the heap) and every
    backward pass copies the OIHW weight gradient back to HWIO.
    """
    value = torch_parameter(kernel)
    if value is None or value.dim() != 4 or value.permute(3, 2, 0, 1).is_contiguous():
        return
    oihw = value.detach().permute(3, 2, 0, 1).contiguous()
    _replace_parameter(kernel, oihw.permute(2, 3, 1, 0))


def match_layout(variable, reference):
    """Gives ``variable`` (an optimiser slot) the memory layout of ``reference`` (its weight), so
    the update's elementwise ops run over matching strides (mismatched strides make the update
    markedly slower)."""
    value, ref = torch_parameter(variable), torch_parameter(reference)
    if value is None or ref is None or value.stride() == ref.stride():
        return
    _replace_parameter(variable, torch.empty_like(ref, dtype=value.dtype).copy_(value.detach()))
