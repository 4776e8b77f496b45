"""Dilated convolutions on TensorFlow without space-to-batch; the maths is ``keras.ops.conv``'s.

``tf.nn.convolution`` (hence ``keras.ops.conv``) runs every dilated convolution as
SpaceToBatchND -> convolution -> BatchToSpaceND, and keeps the transformed input for the
backward pass. ``tf.nn.conv2d`` with ``dilations`` runs oneDNN's dilated convolution directly
(forward and both gradients). Measured on an AMX CPU, forward + both gradients, alternating
25 times (ratio native / space-to-batch):

==================  =========  ==========  =========  ==========
shape               f32 33x65  f32 65x129  bf16 33x65 bf16 65x129
==================  =========  ==========  =========  ==========
256->256, d=2       0.92-0.99  0.98-1.00   0.81-0.83  0.98-1.06
512->512, d=4       0.83-0.94  1.12-1.17   0.89-1.02  1.11-1.14
==================  =========  ==========  =========  ==========

so the direct kernel is taken up to ``NATIVE_DILATION_MAX_CHANNELS`` input channels (ResNet-101's
layer3, 22 dilated convolutions), and layer4 keeps space-to-batch. FADA step peak RSS (no longer
holding the transformed inputs): float32 256x512 3205 -> 3093 MiB, 512x1024 5586 -> 5230 MiB;
mixed_bfloat16 2959 -> 2805, 4399 -> 4281 MiB. Float32 step at 256x512, alternated A/B in one
process: -3.5% (pairwise median ratio 0.965 over 9 pairs).
"""

import tensorflow as tf

NATIVE_DILATION_MAX_CHANNELS = 256


def takes_native_dilation(kernel, strides, dilation):
    """Whether ``dilated_conv2d`` runs this stride-1 dilated convolution (see the table above)."""
    return strides == (1, 1) and dilation != (1, 1) and int(kernel.shape[2]) <= NATIVE_DILATION_MAX_CHANNELS


def dilated_conv2d(x, kernel, padding, dilation):
    """Stride-1 dilated convolution with symmetric zero ``padding`` (pairs): ``(0, 0)`` or "same"."""
    same = padding != (0, 0)
    return tf.nn.conv2d(
        x,
        tf.cast(kernel, x.dtype),
        strides=1,
        padding="SAME" if same else "VALID",
        dilations=(1, *dilation, 1),
    )
