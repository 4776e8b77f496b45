"""Dilated convolutions on TensorFlow without space-to-batch; the maths is ``keras.ops.conv``'s.

``tf.nn.convolution`` (hence ``keras.ops.conv``) runs every dilated convolution as
SpaceToBatchND -> convolution -> BatchToSpaceND, and keeps the transformed input for the
backward pass. ``tf.nn.conv2d`` with ``dilations`` runs oneDNN's dilated convolution directly
(forward and both gradients) and holds no transformed input. The direct kernel wins up to
``NATIVE_DILATION_MAX_CHANNELS`` input channels (ResNet-101's layer3, 22 dilated convolutions)
and loses on layer4's 512->512 at large maps, which keeps space-to-batch. Why and how much:
docs/performance.md and benchmarks/RESULTS.md.
"""

import tensorflow as tf

from keras_fada.backend import tracing

NATIVE_DILATION_MAX_CHANNELS = 256


def takes_native_dilation(kernel, strides, dilation):
    """Whether ``dilated_conv2d`` runs this stride-1 dilated convolution (see above); all of them
    while exporting, where space-to-batch would become an ONNX ``auto_pad=SAME_UPPER`` dilated
    convolution, which ONNX Runtime rejects."""
    if strides != (1, 1) or dilation == (1, 1):
        return False
    return tracing.tracing() or int(kernel.shape[2]) <= NATIVE_DILATION_MAX_CHANNELS


def dilated_conv2d(x, kernel, padding, dilation):
    """Stride-1 dilated convolution with symmetric zero ``padding`` (pairs): ``(0, 0)`` or "same"."""
    same = padding != (0, 0)
    mode = "SAME" if same else "VALID"
    if same and tracing.tracing():  # exported as explicit symmetric pads (see takes_native_dilation)
        mode = [[0, 0], [padding[0], padding[0]], [padding[1], padding[1]], [0, 0]]
    return tf.nn.conv2d(
        x,
        tf.cast(kernel, x.dtype),
        strides=1,
        padding=mode,
        dilations=(1, *dilation, 1),
    )
