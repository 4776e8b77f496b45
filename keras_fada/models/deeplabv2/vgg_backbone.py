"""Dilated VGG-16 feature extractor F of DeepLabV2 (official ``vgg_feature_extractor``)."""

import keras
from keras import layers

from keras_fada.layers.activation import ReLU
from keras_fada.layers.convolution import Conv2D
from keras_fada.models.deeplabv2.feature_extractor import FeatureExtractor
from keras_fada.models.deeplabv2.initializers import torch_default_conv_bias, torch_default_conv_kernel
from keras_fada.models.deeplabv2.normalization import ImageNormalization

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_FC_WIDTH = 1024
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)

# Keras layer name -> index in the official ``backbone`` Sequential (torchvision ``vgg16.features``
# without pool4 (23) and pool5 (30), then fc6 (29), ReLU, fc7 (31), ReLU).
VGG16_OFFICIAL_INDEX = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv4_1": 17,
    "conv4_2": 19,
    "conv4_3": 21,
    "conv5_1": 23,
    "conv5_2": 25,
    "conv5_3": 27,
    "fc6": 29,
    "fc7": 31,
}
# Keras layer name -> index in torchvision's / the Caffe-converted ``vgg16.features``.
VGG16_TORCHVISION_INDEX = {
    **{k: v for k, v in VGG16_OFFICIAL_INDEX.items() if v < 23},
    **{
        "conv5_1": 24,
        "conv5_2": 26,
        "conv5_3": 28,
    },
}


def _conv_relu(x, filters, name, dilation=1):
    fan_in = 9 * int(x.shape[-1])
    x = Conv2D(
        filters,
        3,
        padding="same",
        dilation_rate=dilation,
        kernel_initializer=torch_default_conv_kernel(),
        bias_initializer=torch_default_conv_bias(fan_in),
        name=name,
    )(x)
    return ReLU(name=f"{name}_relu")(x)


def vgg_feature_extractor(
    widths=VGG16_WIDTHS,
    fc_width=VGG16_FC_WIDTH,
    normalize_inputs=True,
    input_shape=(None, None, 3),
    name="vgg_feature_extractor",
):
    """Builds DeepLabV2's VGG-16 body: output stride 8, ``fc_width`` (1024) channels.

    torchvision ``vgg16.features`` without pool4 and pool5 (so only the three 2x2 max-pools of
    stages 1-3 remain), conv5_1..conv5_3 dilated by 2, then ``fc6`` and ``fc7`` as 3x3 convs of
    dilation 4 (512 -> 1024 -> 1024), each followed by ReLU. No BN. The max-pools floor odd sizes,
    as PyTorch's default ``ceil_mode=False``. Kernels use PyTorch's default init (fc6/fc7 are not
    taken from the ImageNet weights in the official code either).

    Args:
        widths: channels of the five conv stages (``(64, 128, 256, 512, 512)`` for VGG-16).
        fc_width: channels of fc6 and fc7.
        normalize_inputs: prepend ``ImageNormalization("caffe")`` (RGB -> BGR, minus the BGR mean,
            no ``/ 255``) so the model takes RGB images in ``[0, 255]``.
        input_shape: ``(H, W, 3)``, ``None`` for any size.

    Example:
    >>> fe = vgg_feature_extractor(widths=(4, 8, 8, 16, 16), fc_width=32)
    >>> fe(keras.ops.zeros((1, 65, 97, 3))).shape
    (1, 8, 12, 32)
    """
    if len(widths) != 5:
        raise ValueError(f"VGG-16 has five conv stages, got widths={widths}")
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if normalize_inputs:
        x = ImageNormalization("caffe", name="image_normalization")(x)
    for stage, (num_convs, width) in enumerate(zip(_CONVS_PER_STAGE, widths, strict=True), start=1):
        dilation = 2 if stage == 5 else 1
        for i in range(1, num_convs + 1):
            x = _conv_relu(x, int(width), f"conv{stage}_{i}", dilation=dilation)
        if stage <= 3:
            x = layers.MaxPooling2D(2, strides=2, padding="valid", name=f"pool{stage}")(x)
    x = _conv_relu(x, int(fc_width), "fc6", dilation=4)
    x = _conv_relu(x, int(fc_width), "fc7", dilation=4)
    return FeatureExtractor(inputs, x, name=name)
