"""The fine-grained domain discriminator of FADA (paper Section 3.2)."""

import math

import keras
from keras import layers, ops

from keras_fada.layers.convolution import Conv2D
from keras_fada.ops import conv2d


def torch_conv_kernel_initializer():
    """PyTorch's default Conv2d weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_conv_bias_initializer(fan_in):
    """PyTorch's default Conv2d bias init, which depends on the kernel's fan-in."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable(package="keras_fada")
class FineGrainedDiscriminator(layers.Layer):
    """Pixel-wise discriminator with ``2K`` outputs: domain *and* class (FADA Eq. 5).

    3x3 stride-1 convolutions ``in -> 256 -> 128`` with LeakyReLU(0.2), then two 3x3 heads
    ``128 -> K`` concatenated as ``[source K | target K]``: the layout of the official
    ``PixelDiscriminator`` (``D.0``, ``D.2``, ``cls1``, ``cls2``), so official checkpoints map
    onto it one to one. ``num_classes=1`` is the traditional binary domain discriminator (the
    paper's "feat. only" baseline). The output keeps the feature resolution; the caller
    upsamples it (the official code does so with ``align_corners=True``).

    Args:
        num_classes: K, the number of semantic classes.
        filters: widths of the two hidden convolutions.
        negative_slope: slope of the LeakyReLU activations.

    Example:
    >>> disc = FineGrainedDiscriminator(num_classes=19)
    >>> disc(keras.random.normal((2, 33, 65, 2048))).shape
    (2, 33, 65, 38)
    """

    def __init__(self, num_classes, filters=(256, 128), negative_slope=0.2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.filters = tuple(int(f) for f in filters)
        self.negative_slope = float(negative_slope)
        self.hidden = []
        fan_ins = [None] + [9 * f for f in self.filters[:-1]]
        for i, (width, fan_in) in enumerate(zip(self.filters, fan_ins, strict=True)):
            self.hidden.append(self._conv(width, fan_in, f"hidden_{i}"))
        head_fan_in = 9 * self.filters[-1]
        self.source_head = self._conv(self.num_classes, head_fan_in, "source_head")
        self.target_head = self._conv(self.num_classes, head_fan_in, "target_head")

    def _conv(self, width, fan_in, name):
        return Conv2D(
            width,
            3,
            padding="same",
            kernel_initializer=torch_conv_kernel_initializer(),
            bias_initializer=torch_conv_bias_initializer(fan_in) if fan_in else "zeros",
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        # The first conv's bias init depends on the input channels, known only now.
        self.hidden[0].bias_initializer = torch_conv_bias_initializer(9 * input_shape[-1])
        shape = input_shape
        for conv in self.hidden:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.source_head.build(shape)
        self.target_head.build(shape)

    def call(self, features, frozen=False):
        """2K logits ``[source K | target K]`` per pixel.

        ``frozen=True`` computes the same values with the weights held constant: gradients reach
        ``features`` but not the discriminator. That is the generator's adversarial step (Eq. 6),
        whose gradients for D the official code computes and then throws away; here they are
        never computed, so one backward pass over the whole iteration serves F, C and D.
        """
        conv = self._frozen_conv if frozen else (lambda layer, x: layer(x))
        x = features
        for layer in self.hidden:
            x = ops.leaky_relu(conv(layer, x), negative_slope=self.negative_slope)
        return ops.concatenate([conv(self.source_head, x), conv(self.target_head, x)], axis=-1)

    @staticmethod
    def _frozen_conv(layer, x):
        kernel = ops.stop_gradient(ops.cast(layer.kernel, x.dtype))
        bias = ops.stop_gradient(ops.cast(layer.bias, x.dtype))
        return conv2d(x, kernel, strides=1, padding="same") + bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, filters=list(self.filters), negative_slope=self.negative_slope
        )
        return config
