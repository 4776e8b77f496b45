"""DeepLabV2 segmentors exactly as the official FADA networks (dilated ResNet-101, VGG-16).

Example:
>>> from keras_fada.models.deeplabv2 import deeplabv2_resnet_small
>>> g = deeplabv2_resnet_small(num_classes=19)
>>> features = g.feature_extractor(images)       # stride-8 features (discriminator input)
>>> logits = g.classifier(features)              # stride-8 logits; upsample with align_corners
"""

from keras_fada.models.deeplabv2.aspp_classifier import ASPPClassifier
from keras_fada.models.deeplabv2.feature_extractor import FeatureExtractor
from keras_fada.models.deeplabv2.initializers import HostRandom
from keras_fada.models.deeplabv2.normalization import (
    FrozenBatchNormalization,
    ImageNormalization,
    batch_norm_layers,
    freeze_batch_norm,
)
from keras_fada.models.deeplabv2.resnet_backbone import resnet_feature_extractor
from keras_fada.models.deeplabv2.segmentor import (
    Segmentor,
    deeplabv2_resnet,
    deeplabv2_resnet101,
    deeplabv2_resnet_small,
    deeplabv2_vgg,
    deeplabv2_vgg16,
)
from keras_fada.models.deeplabv2.vgg_backbone import vgg_feature_extractor
from keras_fada.models.deeplabv2.weights import (
    convert_checkpoint,
    load_state_dict,
    load_torch_weights,
    read_checkpoint,
)

__all__ = [
    "ASPPClassifier",
    "FeatureExtractor",
    "FrozenBatchNormalization",
    "HostRandom",
    "ImageNormalization",
    "Segmentor",
    "batch_norm_layers",
    "convert_checkpoint",
    "deeplabv2_resnet",
    "deeplabv2_resnet101",
    "deeplabv2_resnet_small",
    "deeplabv2_vgg",
    "deeplabv2_vgg16",
    "freeze_batch_norm",
    "load_state_dict",
    "load_torch_weights",
    "read_checkpoint",
    "resnet_feature_extractor",
    "vgg_feature_extractor",
]
