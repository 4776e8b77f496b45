"""The DeepLabV2 segmentor G = C o F and its builders (ResNet-101, VGG-16, small ResNet)."""

import keras

from keras_fada.models.deeplabv2.aspp_classifier import ASPPClassifier
from keras_fada.models.deeplabv2.resnet_backbone import (
    RESNET101_BLOCKS,
    RESNET101_WIDTHS,
    SMALL_BLOCKS,
    SMALL_WIDTHS,
    resnet_feature_extractor,
)
from keras_fada.models.deeplabv2.vgg_backbone import VGG16_FC_WIDTH, VGG16_WIDTHS, vgg_feature_extractor


@keras.saving.register_keras_serializable(package="keras_fada")
class Segmentor(keras.Model):
    """A segmentor ``G = C o F`` whose feature extractor and classifier are reachable separately.

    ``call(images) = classifier(feature_extractor(images))`` returns **stride-8 logits**; the
    caller upsamples them (``keras_fada.ops.resize_bilinear(..., align_corners=True)`` as the
    official code). FADA's training model calls ``segmentor.feature_extractor`` (whose output also
    feeds the discriminator) and ``segmentor.classifier`` itself.

    Args:
        feature_extractor: a ``keras.Model`` mapping images ``(N, H, W, 3)`` to features.
        classifier: a layer mapping features to ``num_classes`` logits (e.g. ``ASPPClassifier``).

    Example:
    >>> g = deeplabv2_resnet_small(num_classes=5)
    >>> g(keras.ops.zeros((1, 65, 97, 3))).shape
    (1, 9, 13, 5)
    >>> g.feature_extractor.output.shape
    (None, None, None, 256)
    """

    def __init__(self, feature_extractor, classifier, **kwargs):
        super().__init__(**kwargs)
        self.feature_extractor = feature_extractor
        self.classifier = classifier
        if feature_extractor.built and not classifier.built:
            classifier.build(tuple(feature_extractor.output.shape))
        if feature_extractor.built and classifier.built:
            self.built = True

    @property
    def num_classes(self):
        return getattr(self.classifier, "num_classes", None)

    @property
    def feature_channels(self):
        return int(self.feature_extractor.output.shape[-1])

    def build(self, input_shape):
        if not self.feature_extractor.built:
            self.feature_extractor.build(input_shape)
        if not self.classifier.built:
            self.classifier.build(self.feature_extractor.compute_output_shape(input_shape))
        self.built = True

    def call(self, images, training=None):
        return self.classifier(self.feature_extractor(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return self.classifier.compute_output_shape(self.feature_extractor.compute_output_shape(input_shape))

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "feature_extractor": keras.saving.serialize_keras_object(self.feature_extractor),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["feature_extractor"] = keras.saving.deserialize_keras_object(config["feature_extractor"])
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)

    def save_to_preset(self, preset_dir, metadata=None):
        """Writes a local preset folder (``config.json``, ``model.weights.h5``, ``metadata.json``
        with ``metadata``: task, class names, palette, mIoU...); see ``presets.py``."""
        from keras_fada.models.deeplabv2 import presets

        return presets.save_to_preset(self, preset_dir, metadata)

    @classmethod
    def from_preset(cls, preset_dir):
        """The segmentor saved by ``save_to_preset`` (architecture, BN kind and weights).

        Example:
        >>> Segmentor.from_preset("presets/g2c_sd").num_classes
        19
        """
        from keras_fada.models.deeplabv2 import presets

        return presets.from_preset(preset_dir)


def deeplabv2_resnet(
    num_classes,
    blocks=RESNET101_BLOCKS,
    widths=RESNET101_WIDTHS,
    expansion=4,
    frozen_bn=True,
    normalize_inputs=True,
    aspp_dilations=(6, 12, 18, 24),
    name="deeplabv2_resnet",
):
    """DeepLabV2 on a dilated ResNet (output stride 8) with the ASPP classifier.

    The same builder gives the official ResNet-101 (``deeplabv2_resnet101``) and the small CPU
    configuration (``deeplabv2_resnet_small``); only the numbers differ.

    Args:
        num_classes: K, the number of semantic classes.
        blocks: bottlenecks per stage.
        widths: bottleneck widths per stage (features have ``widths[-1] * expansion`` channels).
        expansion: bottleneck expansion factor.
        frozen_bn: ``True`` for the official FrozenBatchNorm, ``False`` for trainable BN
            (the official GTA5 self-distillation stage).
        normalize_inputs: the model takes RGB in ``[0, 255]`` (``True``) or ImageNet-normalised
            images (``False``).
        aspp_dilations: dilations of the four ASPP branches.

    Example:
    >>> g = deeplabv2_resnet(19, blocks=(1, 1, 1, 1), widths=(8, 16, 32, 64))
    >>> g(keras.ops.zeros((1, 64, 64, 3))).shape
    (1, 8, 8, 19)
    """
    fe = resnet_feature_extractor(
        blocks=blocks,
        widths=widths,
        expansion=expansion,
        frozen_bn=frozen_bn,
        normalize_inputs=normalize_inputs,
        name="feature_extractor",
    )
    classifier = ASPPClassifier(num_classes, dilations=aspp_dilations, name="classifier")
    return Segmentor(fe, classifier, name=name)


def deeplabv2_resnet101(num_classes, frozen_bn=True, normalize_inputs=True):
    """The official DeepLabV2-ResNet-101 of FADA: 42,394,816 feature-extractor weights (frozen BN).

    Example:
    >>> g = deeplabv2_resnet101(num_classes=19)
    >>> g.feature_extractor.output.shape[-1]
    2048
    """
    return deeplabv2_resnet(
        num_classes,
        blocks=RESNET101_BLOCKS,
        widths=RESNET101_WIDTHS,
        frozen_bn=frozen_bn,
        normalize_inputs=normalize_inputs,
        name="deeplabv2_resnet101",
    )


def deeplabv2_resnet_small(num_classes, frozen_bn=True, normalize_inputs=True):
    """The small configuration for CPU tests and the synthetic task: blocks (1, 1, 1, 1), widths
    (8, 16, 32, 64), 256 feature channels, otherwise identical to ResNet-101 (dilations, padding).

    Example:
    >>> deeplabv2_resnet_small(num_classes=5).count_params() < 200_000
    True
    """
    return deeplabv2_resnet(
        num_classes,
        blocks=SMALL_BLOCKS,
        widths=SMALL_WIDTHS,
        frozen_bn=frozen_bn,
        normalize_inputs=normalize_inputs,
        name="deeplabv2_resnet_small",
    )


def deeplabv2_vgg(
    num_classes,
    widths=VGG16_WIDTHS,
    fc_width=VGG16_FC_WIDTH,
    normalize_inputs=True,
    aspp_dilations=(6, 12, 18, 24),
    name="deeplabv2_vgg",
):
    """DeepLabV2 on the dilated VGG body (output stride 8) with the ASPP classifier.

    Example:
    >>> g = deeplabv2_vgg(5, widths=(4, 8, 8, 16, 16), fc_width=32)
    >>> g(keras.ops.zeros((1, 64, 64, 3))).shape
    (1, 8, 8, 5)
    """
    fe = vgg_feature_extractor(
        widths=widths, fc_width=fc_width, normalize_inputs=normalize_inputs, name="feature_extractor"
    )
    classifier = ASPPClassifier(num_classes, dilations=aspp_dilations, name="classifier")
    return Segmentor(fe, classifier, name=name)


def deeplabv2_vgg16(num_classes, normalize_inputs=True):
    """The official DeepLabV2-VGG-16 of FADA (1024-channel features, Caffe BGR input convention).

    Example:
    >>> g = deeplabv2_vgg16(num_classes=19)
    >>> g.feature_extractor.output.shape[-1]
    1024
    """
    return deeplabv2_vgg(num_classes, normalize_inputs=normalize_inputs, name="deeplabv2_vgg16")
