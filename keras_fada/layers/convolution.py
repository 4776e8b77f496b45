"""The 2-D convolution layer of every keras-fada network."""

import keras
from keras import ops

from keras_fada.backend import tracing
from keras_fada.backend.keras_internals import variables_as_stored
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
        store_conv2d_kernel(self.kernel, self.compute_dtype)

    def convolution_op(self, inputs, kernel):
        if tracing.tracing() and keras.backend.backend() == "jax":
            # An export at symbolic sizes: a strided 1x1 GEMM's slice has size ceil(h / 2), which
            # JAX cannot prove equal to the padded 3x3's floor((h - 1) / 2) + 1 (a residual Add).
            return ops.conv(inputs, kernel, self.strides, self.padding, dilation_rate=self.dilation_rate)
        return conv2d(
            inputs, kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate
        )

    def call_scaled(self, inputs, scale, shift):
        """``self(inputs) * scale + shift`` per output channel, folded into the convolution.

        ``conv(x, W) * s + b == conv(x, W * s) + b``: the scale goes into the kernel, a
        ``C_out``-vector product, instead of over the output map, and the shift is the
        convolution's bias. This is how ``FeatureExtractor`` runs a frozen BatchNorm that alone
        reads a bias-free convolution. ``scale`` and ``shift`` are float32 vectors; the
        convolution runs in the layer's compute dtype, like ``__call__`` (float32 weights).
        """
        if self.use_bias or self.activation is not keras.activations.linear:
            raise ValueError(f"{self.name}: call_scaled needs a bias-free linear convolution")
        dtype = self.compute_dtype
        with variables_as_stored():  # W * s in float32, then one cast (two with autocast)
            kernel = ops.cast(ops.convert_to_tensor(self.kernel) * scale, dtype)
        return conv2d(
            ops.cast(inputs, dtype),
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            bias=ops.cast(shift, dtype),
        )
