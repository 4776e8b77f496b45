"""Dilated ResNet feature extractor F of DeepLabV2 (official ``resnet_feature_extractor``).

Layer names follow the official/torchvision module paths with ``.`` replaced by ``_``
(``layer3_0_conv2`` is ``backbone.layer3.0.conv2``), which is how ``weights.py`` maps checkpoints.
"""

import keras
from keras import layers

from keras_fada.layers.activation import Add, ReLU
from keras_fada.layers.convolution import Conv2D
from keras_fada.models.deeplabv2.feature_extractor import FeatureExtractor
from keras_fada.models.deeplabv2.initializers import kaiming_normal_fan_out
from keras_fada.models.deeplabv2.normalization import FrozenBatchNormalization, ImageNormalization

RESNET101_BLOCKS = (3, 4, 23, 3)
RESNET101_WIDTHS = (64, 128, 256, 512)
SMALL_BLOCKS = (1, 1, 1, 1)
SMALL_WIDTHS = (8, 16, 32, 64)


def _conv(x, filters, kernel_size, name, strides=1, dilation=1):
    """A bias-free conv with PyTorch's symmetric padding ``dilation * (kernel_size // 2)``."""
    pad = dilation * (kernel_size // 2)
    if strides > 1 and pad > 0:
        # 'same' pads asymmetrically for stride 2; PyTorch pads both sides equally.
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad > 0 else "valid"
    return Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer=kaiming_normal_fan_out(),
        name=name,
    )(x)


def _batch_norm(x, name, frozen_bn):
    if frozen_bn:
        return FrozenBatchNormalization(name=name)(x)
    # torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= Keras momentum 0.9).
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _bottleneck(x, in_channels, width, expansion, stride, dilation, name, frozen_bn):
    """torchvision ``Bottleneck`` (ResNet v1.5): the stride sits on the 3x3 conv."""
    out_channels = width * expansion
    shortcut = x
    y = _conv(x, width, 1, f"{name}_conv1")
    y = ReLU(name=f"{name}_relu1")(_batch_norm(y, f"{name}_bn1", frozen_bn))
    y = _conv(y, width, 3, f"{name}_conv2", strides=stride, dilation=dilation)
    y = ReLU(name=f"{name}_relu2")(_batch_norm(y, f"{name}_bn2", frozen_bn))
    y = _conv(y, out_channels, 1, f"{name}_conv3")
    y = _batch_norm(y, f"{name}_bn3", frozen_bn)
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv(x, out_channels, 1, f"{name}_downsample_0", strides=stride)
        shortcut = _batch_norm(shortcut, f"{name}_downsample_1", frozen_bn)
    y = Add(name=f"{name}_add")([y, shortcut])
    return ReLU(name=f"{name}_out")(y)


def resnet_feature_extractor(
    blocks=RESNET101_BLOCKS,
    widths=RESNET101_WIDTHS,
    expansion=4,
    stem_width=None,
    replace_stride_with_dilation=(False, True, True),
    frozen_bn=True,
    normalize_inputs=True,
    input_shape=(None, None, 3),
    name="resnet_feature_extractor",
):
    """Builds the dilated ResNet body (stem + 4 stages, no avgpool/fc) as a functional model.

    The defaults are the official ResNet-101 at output stride 8: blocks ``[3, 4, 23, 3]``, the
    stride on the bottleneck's 3x3 conv, layer3 dilated by 2 and layer4 by 4, where, as in
    torchvision's ``replace_stride_with_dilation``, the first block of a dilated stage keeps the
    previous dilation and its 1x1 downsample has stride 1. The stride-2 7x7 conv, the max-pool
    and layer2's stride-2 3x3 conv use explicit symmetric zero padding (as PyTorch); zero-padding
    the max-pool is exact because it follows a ReLU.

    Args:
        blocks: bottlenecks per stage.
        widths: bottleneck widths per stage (output channels are ``width * expansion``).
        expansion: bottleneck expansion factor.
        stem_width: channels of the 7x7 stem conv (default ``widths[0]``).
        replace_stride_with_dilation: for stages 2..4, trade the stride 2 for dilation.
        frozen_bn: ``FrozenBatchNormalization`` (official ``FREEZE_BN: True``) or trainable
            ``BatchNormalization(epsilon=1e-5, momentum=0.9)``.
        normalize_inputs: prepend ``ImageNormalization("imagenet")`` so the model takes RGB
            images in ``[0, 255]``; ``False`` takes already-normalised images.
        input_shape: ``(H, W, 3)``, ``None`` for any size.

    Example:
    >>> fe = resnet_feature_extractor(blocks=(1, 1, 1, 1), widths=(8, 16, 32, 64))
    >>> fe(keras.ops.zeros((1, 65, 97, 3))).shape
    (1, 9, 13, 256)
    """
    if len(blocks) != len(widths) or len(replace_stride_with_dilation) != len(blocks) - 1:
        raise ValueError(
            f"blocks {blocks}, widths {widths} and replace_stride_with_dilation "
            f"{replace_stride_with_dilation} disagree on the number of stages"
        )
    stem = int(stem_width or widths[0])
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if normalize_inputs:
        x = ImageNormalization("imagenet", name="image_normalization")(x)
    x = _conv(x, stem, 7, "conv1", strides=2)
    x = ReLU(name="relu")(_batch_norm(x, "bn1", frozen_bn))
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    in_channels, dilation = stem, 1
    for stage, (num_blocks, width) in enumerate(zip(blocks, widths, strict=True)):
        stride = 1 if stage == 0 else 2
        previous_dilation = dilation
        if stage > 0 and replace_stride_with_dilation[stage - 1]:
            dilation *= stride
            stride = 1
        for j in range(int(num_blocks)):
            x = _bottleneck(
                x,
                in_channels,
                int(width),
                int(expansion),
                stride=stride if j == 0 else 1,
                dilation=previous_dilation if j == 0 else dilation,
                name=f"layer{stage + 1}_{j}",
                frozen_bn=frozen_bn,
            )
            in_channels = int(width) * int(expansion)
    return FeatureExtractor(inputs, x, name=name)
