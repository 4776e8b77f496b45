"""Normalisation layers of the DeepLabV2 feature extractors.

``ImageNormalization`` is the one place where keras-fada turns plain RGB images in ``[0, 255]`` into
what the ImageNet weights expect; ``FrozenBatchNormalization`` is the official ``FrozenBatchNorm2d``.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_fada.ops import in_place_if_donated

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
MODES = ("imagenet", "caffe")


@keras.saving.register_keras_serializable(package="keras_fada")
class ImageNormalization(layers.Layer):
    """Maps RGB images in ``[0, 255]`` to the input convention of the ImageNet weights.

    * ``"imagenet"`` (torchvision ResNet-101): ``(x / 255 - mean) / std`` per RGB channel with
      mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``.
    * ``"caffe"`` (the Caffe-converted VGG-16 of the official code): RGB -> BGR, no ``/ 255``,
      subtract the BGR mean ``(103.939, 116.779, 123.68)``.

    It is the first layer of every DeepLabV2 feature extractor built with ``normalize_inputs=True``
    (the default), so users feed plain RGB images and the FADA model calls ``F`` as is.

    Args:
        mode: ``"imagenet"`` or ``"caffe"``.

    Example:
    >>> norm = ImageNormalization("imagenet")
    >>> norm(keras.ops.full((1, 2, 2, 3), 255.0)).shape
    (1, 2, 2, 3)
    """

    def __init__(self, mode="imagenet", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        if mode == "imagenet":
            std = np.asarray(IMAGENET_STD, dtype="float64")
            self._scale = (1.0 / (255.0 * std)).astype("float32")
            self._offset = (-np.asarray(IMAGENET_MEAN, dtype="float64") / std).astype("float32")
        else:
            self._scale = None
            self._offset = -np.asarray(CAFFE_BGR_MEAN, dtype="float32")

    def call(self, images):
        x = images
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x + ops.convert_to_tensor(self._offset, dtype=x.dtype)
        scale = ops.convert_to_tensor(self._scale, dtype=x.dtype)
        return x * scale + ops.convert_to_tensor(self._offset, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@keras.saving.register_keras_serializable(package="keras_fada")
class FrozenBatchNormalization(layers.Layer):
    """BatchNorm with fixed statistics: the official ``FrozenBatchNorm2d`` (``FREEZE_BN: True``).

    Computes ``x * s + (beta - mean * s)`` with ``s = gamma * rsqrt(var)`` over the last axis,
    **without epsilon**, exactly as the official layer. The four vectors (``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance``, named as in ``keras.layers.BatchNormalization``) are
    non-trainable variables: they never receive gradients, are never updated by ``fit``, and stay
    non-trainable when the model is set ``trainable = True``. They change only by loading weights.

    Example:
    >>> bn = FrozenBatchNormalization()
    >>> bn(keras.ops.ones((1, 4, 4, 8))).shape
    (1, 4, 4, 8)
    """

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        self.gamma = self.add_weight(shape=channels, initializer="ones", trainable=False, name="gamma")
        self.beta = self.add_weight(shape=channels, initializer="zeros", trainable=False, name="beta")
        self.moving_mean = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=channels, initializer="ones", trainable=False, name="moving_variance"
        )

    def scale_and_shift(self, dtype="float32"):
        """``(s, beta - mean * s)`` with ``s = gamma * rsqrt(var)``: the layer is ``x * s + shift``."""
        scale = ops.cast(self.gamma, dtype) * ops.rsqrt(ops.cast(self.moving_variance, dtype))
        return scale, ops.cast(self.beta, dtype) - ops.cast(self.moving_mean, dtype) * scale

    def call(self, inputs, training=None):
        scale, shift = self.scale_and_shift(inputs.dtype)
        out = in_place_if_donated("affine_", inputs, scale, shift)  # torch, nothing else reads it
        return inputs * scale + shift if out is None else out

    def compute_output_shape(self, input_shape):
        return input_shape


def batch_norm_layers(model):
    """Every ``keras.layers.BatchNormalization`` in ``model``, at any depth, each once.

    Public API only: a ``keras.Model``'s sublayers are its ``layers``; a plain layer's are the
    layers it holds as attributes (alone or in lists, tuples and dicts), which is what Keras tracks.
    """
    found, seen = [], set()

    def visit(obj):
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item)
        elif isinstance(obj, layers.Layer) and id(obj) not in seen:
            seen.add(id(obj))
            if isinstance(obj, layers.BatchNormalization):
                found.append(obj)
            visit(obj.layers if isinstance(obj, keras.Model) else list(vars(obj).values()))

    visit(model.layers if isinstance(model, keras.Model) else list(vars(model).values()))
    return found


def freeze_batch_norm(segmentor):
    """Fixes the statistics and affine parameters of every BatchNorm of ``segmentor`` (official
    ``FREEZE_BN`` for a segmentor built with trainable BatchNorm): ``trainable = False``, which
    in Keras also makes the layer normalise with its moving statistics during ``fit``."""
    for layer in batch_norm_layers(segmentor):
        layer.trainable = False
