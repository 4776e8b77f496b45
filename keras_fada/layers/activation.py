"""The ReLU layer of keras-fada's networks."""

import keras

from keras_fada.ops import in_place_if_donated, materialized_relu


@keras.saving.register_keras_serializable(package="keras_fada")
class ReLU(keras.layers.ReLU):
    """``keras.layers.ReLU`` computed by ``keras_fada.ops.materialized_relu`` in its plain form
    (no slope, cap or threshold): same values and gradients, but on JAX's CPU backend XLA
    computes the output once and keeps only it for the backward pass. Without it, XLA recomputed
    the whole residual stream of a ResNet stage inside every block's output and kept each
    convolution's output alive for the ReLU gradients (see ``materialized_relu``).

    On torch, a ReLU whose input ``FeatureExtractor`` donates (no other layer reads it) runs in
    place, as torchvision's ``ReLU(inplace=True)`` (``keras_fada/backend/torch_in_place.py``).

    Example:
    >>> ReLU(name="layer3_0_out")(keras.ops.ones((1, 32, 64, 1024))).shape
    (1, 32, 64, 1024)
    """

    def call(self, inputs):
        if self.negative_slope == 0 and self.max_value is None and self.threshold == 0:
            out = in_place_if_donated("relu_", inputs)  # torch, nothing else reads it
            return materialized_relu(inputs) if out is None else out
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="keras_fada")
class Add(keras.layers.Add):
    """``keras.layers.Add``; on torch, when ``FeatureExtractor`` donates the first input (no other
    layer reads it), the others are added into its memory, as torchvision's ``out += identity``
    (``keras_fada/backend/torch_in_place.py``). Same values and gradients.

    Example:
    >>> Add(name="layer1_0_add")([keras.ops.ones((1, 4, 4, 8)), keras.ops.ones((1, 4, 4, 8))]).shape
    (1, 4, 4, 8)
    """

    def call(self, inputs):
        # add_ works only on two tensors of the same shape and dtype (else None: Keras' Add).
        out = in_place_if_donated("add_", *inputs) if len(inputs) == 2 else None
        return super().call(inputs) if out is None else out
