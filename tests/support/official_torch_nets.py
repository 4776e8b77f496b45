"""Plain-PyTorch networks with the official FADA module names, for the conversion tests.

Written from the official code's structure (torchvision ResNet with ``replace_stride_with_dilation``,
FrozenBatchNorm2d, torchvision vgg16 features minus pool4/pool5, ASPP_Classifier_V2,
PixelDiscriminator), parameterised by width so that tests stay small. Import only after
``pytest.importorskip("torch")``.
"""

import numpy as np
import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """core/models/layers.py: four buffers, no eps."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x):
        scale = self.weight * self.running_var.rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, expansion, stride, downsample, dilation, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * expansion, 1, bias=False)
        self.bn3 = norm(planes * expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision ResNet (no avgpool/fc) with replace_stride_with_dilation=[False, True, True]."""

    def __init__(self, blocks, widths, expansion=4, frozen_bn=True):
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.expansion = expansion
        self.inplanes, self.dilation = widths[0], 1
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        replace = [False, True, True]
        self.layer1 = self._make_layer(norm, widths[0], blocks[0])
        self.layer2 = self._make_layer(norm, widths[1], blocks[1], stride=2, dilate=replace[0])
        self.layer3 = self._make_layer(norm, widths[2], blocks[2], stride=2, dilate=replace[1])
        self.layer4 = self._make_layer(norm, widths[3], blocks[3], stride=2, dilate=replace[2])

    def _make_layer(self, norm, planes, n, stride=1, dilate=False):
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * self.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * self.expansion, 1, stride=stride, bias=False),
                norm(planes * self.expansion),
            )
        first = Bottleneck(self.inplanes, planes, self.expansion, stride, downsample, previous_dilation, norm)
        layers = [first]
        self.inplanes = planes * self.expansion
        for _ in range(1, n):
            layers.append(Bottleneck(self.inplanes, planes, self.expansion, 1, None, self.dilation, norm))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def vgg_backbone(widths=(64, 128, 256, 512, 512), fc_width=1024):
    """feature_extractor.py's vgg construction: torchvision vgg16 features, del pool5 and pool4,
    conv5 dilated 2, then fc6/fc7 (3x3, dilation 4) with ReLU."""
    cfg = [widths[0]] * 2 + ["M"] + [widths[1]] * 2 + ["M"] + [widths[2]] * 3 + ["M"]
    cfg += [widths[3]] * 3 + ["M"] + [widths[4]] * 3 + ["M"]
    features, cin = [], 3
    for v in cfg:
        if v == "M":
            features.append(nn.MaxPool2d(2, 2))
        else:
            features += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    features = list(features)
    del features[30]  # pool5
    del features[23]  # pool4
    for i in (23, 25, 27):
        features[i].dilation, features[i].padding = (2, 2), (2, 2)
    fc6 = nn.Conv2d(cin, fc_width, 3, padding=4, dilation=4)
    fc7 = nn.Conv2d(fc_width, fc_width, 3, padding=4, dilation=4)
    return nn.Sequential(*features, fc6, nn.ReLU(inplace=True), fc7, nn.ReLU(inplace=True))


class FeatureExtractor(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)


class ASPPClassifierV2(nn.Module):
    def __init__(self, in_channels, num_classes, dilations=(6, 12, 18, 24)):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for m in self.conv2d_list:
            m.weight.data.normal_(0, 0.01)

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:]:
            out = out + conv(x)
        return out


class PixelDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=256, num_classes=1):
        super().__init__()
        self.D = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf // 2, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.cls1 = nn.Conv2d(ndf // 2, num_classes, 3, 1, 1)
        self.cls2 = nn.Conv2d(ndf // 2, num_classes, 3, 1, 1)

    def forward(self, x):
        x = self.D(x)
        return torch.cat([self.cls1(x), self.cls2(x)], dim=1)


def randomize(module, seed=0):
    """Random weights (conv: N(0, sqrt(1/fan_in))-ish, BN: random affine and positive statistics)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * np.sqrt(1.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                n = m.weight.shape[0]
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return module


def state_dict_numpy(module, prefix=""):
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def run(module, images_nhwc):
    """Forward a NHWC numpy batch through a torch module in eval mode; returns NHWC numpy."""
    module.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
        return module(x).numpy().transpose(0, 2, 3, 1)
