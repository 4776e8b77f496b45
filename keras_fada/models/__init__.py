"""Segmentation networks of keras-fada."""

from keras_fada.models.deeplabv2 import (
    ASPPClassifier,
    FrozenBatchNormalization,
    ImageNormalization,
    Segmentor,
    convert_checkpoint,
    deeplabv2_resnet,
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    deeplabv2_vgg,
    deeplabv2_vgg16,
    load_torch_weights,
)

__all__ = [
    "ASPPClassifier",
    "FrozenBatchNormalization",
    "ImageNormalization",
    "Segmentor",
    "convert_checkpoint",
    "deeplabv2_resnet",
    "deeplabv2_resnet101",
    "deeplabv2_resnet_small",
    "deeplabv2_vgg",
    "deeplabv2_vgg16",
    "load_torch_weights",
]
