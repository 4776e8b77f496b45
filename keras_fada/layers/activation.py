"""The ReLU layer of keras-fada's networks."""

import keras

from keras_fada.ops import materialized_relu


@keras.saving.register_keras_serializable(package="keras_fada")
class ReLU(keras.layers.ReLU):
    """``keras.layers.ReLU`` computed by ``keras_fada.ops.materialized_relu`` in its plain form
    (no slope, cap or threshold): same values and gradients, but on JAX's CPU backend XLA
    computes the output once and keeps only it for the backward pass. Without it, XLA recomputed
    the whole residual stream of a ResNet stage inside every block's output and kept each
    convolution's output alive for the ReLU gradients (see ``materialized_relu``).

    Example:
    >>> ReLU(name="layer3_0_out")(keras.ops.ones((1, 32, 64, 1024))).shape
    (1, 32, 64, 1024)
    """

    def call(self, inputs):
        if self.negative_slope == 0 and self.max_value is None and self.threshold == 0:
            return materialized_relu(inputs)
        return super().call(inputs)
