"""Convolutions on torch in NCHW memory behind channels-last (NHWC) views.

Keras' channels-last ``conv`` on torch copies every input to NCHW and then to channels-last
memory, and oneDNN's channels-last kernels are slower here than NCHW (3x3 64->64 at 64x128: 31 vs
18 ms forward + backward). This one hands ``conv2d`` an NCHW tensor (a free view when the input
came from another convolution of this module, through any elementwise ops) and returns the result
as an NHWC view of NCHW memory, so a network of these convolutions runs in NCHW memory end to
end, as the reference PyTorch code does.
"""

import torch.nn.functional as F
from keras import ops


def conv2d(x, kernel, strides, padding, dilation):
    """Channels-last ``keras.ops.conv`` with symmetric zero ``padding``; all three are pairs."""
    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    # contiguous() is free for an NHWC view of NCHW memory, i.e. this function's output.
    y = F.conv2d(
        x.permute(0, 3, 1, 2).contiguous(),
        kernel.permute(3, 2, 0, 1),
        stride=strides,
        padding=padding,
        dilation=dilation,
    )
    return y.permute(0, 2, 3, 1)
