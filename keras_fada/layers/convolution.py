"""The 2-D convolution layer of every keras-fada network."""

import keras

from keras_fada.ops import conv2d, store_conv2d_kernel


@keras.saving.register_keras_serializable(package="keras_fada")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (channels-last) whose convolution is ``keras_fada.ops.conv2d``.

    Same arguments, variables, names and checkpoints as ``keras.layers.Conv2D``; the same values
    (up to float summation order). Only the kernel differs: 1x1 convolutions are GEMMs on JAX
    and convolutions run in NCHW memory on torch, with the kernel stored in OIHW memory, which
    is where those backends are fast (see ``keras_fada.ops.conv2d`` and ``store_conv2d_kernel``).

    Example:
    >>> conv = Conv2D(64, 1, use_bias=False)
    >>> conv(keras.ops.zeros((1, 32, 64, 256))).shape
    (1, 32, 64, 64)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last" or self.groups != 1:
            raise ValueError("keras_fada.layers.Conv2D is channels-last with groups=1")

    def build(self, input_shape):
        super().build(input_shape)
        store_conv2d_kernel(self.kernel)

    def convolution_op(self, inputs, kernel):
        return conv2d(
            inputs, kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate
        )
