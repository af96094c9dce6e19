"""ResNet50V2 and VGG16, whose ImageNet weights the user supplies (no package ships them offline).

ResNet50V2 follows Keras' ``ResNet50V2`` layer by layer (pre-activation blocks; each stage
downsamples in its *last* block; zero padding before the stem's max-pool; batch-norm eps 1.001e-5),
so Keras weights convert one layer to one module. Keras layer names map to module names as:

=================================  ========================================
Keras                              this module
=================================  ========================================
``conv1_conv``                     ``stem.conv``
``convS_blockB_preact_bn``         ``stage{S-1}.block{B}.preact_bn``
``convS_blockB_K_conv`` (K=1,2,3)  ``stage{S-1}.block{B}.conv{K}``
``convS_blockB_K_bn`` (K=1,2)      ``stage{S-1}.block{B}.bn{K}``
``convS_blockB_0_conv``            ``stage{S-1}.block{B}.shortcut``
``post_bn``                        ``post_bn``
``predictions``                    ``fc``
=================================  ========================================

(Convolution kernels transpose from HWIO to OIHW, dense kernels from (in, out) to (out, in).)

VGG16 uses torchvision's layout (``features.N``, ``classifier.N``), so torchvision's
``vgg16-397923af.pth`` loads as it is, with ImageNet mean/std on RGB input.

``width`` scales every layer's channels; 1.0 is the real network. Tests use a narrow one so that
the weights mechanism runs on a few megabytes instead of 100-550 MB.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from postergenre.models.backbones import Backbone

KERAS_BN_EPS = 1.001e-5
RESNET_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (bottleneck width, blocks); the output is 4x the width
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, 3x3 convolutions)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class PreActBottleneck(nn.Module):
    """Keras' ``block2``: BN-ReLU first; a projection shortcut in a stage's first block, strided in its last."""

    def __init__(self, in_channels: int, width: int, stride: int = 1, projection: bool = False):
        super().__init__()
        out_channels = 4 * width
        self.preact_bn = nn.BatchNorm2d(in_channels, eps=KERAS_BN_EPS)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride) if projection else None
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=KERAS_BN_EPS)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=KERAS_BN_EPS)
        self.conv3 = nn.Conv2d(width, out_channels, 1)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = torch.relu(self.preact_bn(x))
        if self.shortcut is not None:
            shortcut = self.shortcut(preact)
        else:
            # Keras: MaxPooling2D(1, strides) on the raw input, i.e. plain subsampling.
            shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        out = torch.relu(self.bn1(self.conv1(preact)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return shortcut + self.conv3(out)


class ResNet50V2(Backbone):
    gradcam_layer = "head"

    def __init__(self, width: float = 1.0):
        super().__init__()
        stem_channels = _scaled(64, width)
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, stem_channels, 7, 2, padding=3),
                # Keras pads with zeros before pooling; the stem has no ReLU, so this differs from -inf padding.
                pad=nn.ZeroPad2d(1),
                pool=nn.MaxPool2d(3, 2),
            )
        )
        channels = stem_channels
        for index, (stage_width, blocks) in enumerate(RESNET_STAGES):
            stage = self._make_stage(channels, _scaled(stage_width, width), blocks, last_stride=1 if index == 3 else 2)
            self.add_module(f"stage{index + 1}", stage)
            channels = 4 * _scaled(stage_width, width)
        self.post_bn = nn.BatchNorm2d(channels, eps=KERAS_BN_EPS)
        self.fc = nn.Linear(channels, 1000).requires_grad_(False)
        self.num_features = channels
        head = nn.Sequential(self.post_bn, nn.ReLU())
        stages = [("stem", self.stem)] + [(f"stage{k}", getattr(self, f"stage{k}")) for k in range(1, 5)]
        self._set_stages([*stages, ("head", head)])

    @staticmethod
    def _make_stage(in_channels: int, width: int, blocks: int, last_stride: int) -> nn.Sequential:
        layers = OrderedDict()
        for index in range(blocks):
            stride = last_stride if index == blocks - 1 else 1
            layers[f"block{index + 1}"] = PreActBottleneck(in_channels, width, stride, projection=index == 0)
            in_channels = 4 * width
        return nn.Sequential(layers)

    def _imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward(x))


class VGG16(Backbone):
    gradcam_layer = "block5"

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        bounds, in_channels = [], 3
        for channels, convolutions in VGG16_BLOCKS:
            start = len(layers)
            for _ in range(convolutions):
                layers += [nn.Conv2d(in_channels, _scaled(channels, width), 3, padding=1), nn.ReLU()]
                in_channels = _scaled(channels, width)
            layers.append(nn.MaxPool2d(2))
            bounds.append((start, len(layers)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)  # torchvision's classifier expects 7x7 maps
        self.classifier = _vgg_classifier(in_channels * 7 * 7, _scaled(4096, width))
        self.num_features = in_channels
        self._set_stages([(f"block{k + 1}", self.features[start:end]) for k, (start, end) in enumerate(bounds)])

    def _imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _vgg_classifier(in_features: int, hidden: int) -> nn.Sequential:
    """torchvision's ImageNet classifier, zero-filled: only loaded weights give it meaning.

    Its 120M parameters are never trained here and only used by ``imagenet_logits`` once weights
    are loaded; skipping their random initialisation saves about 3 s per VGG16 built on a CPU.
    """
    linears = [
        nn.utils.skip_init(nn.Linear, n_in, n_out)
        for n_in, n_out in [(in_features, hidden), (hidden, hidden), (hidden, 1000)]
    ]
    for linear in linears:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
    layers = [linears[0], nn.ReLU(), nn.Dropout(), linears[1], nn.ReLU(), nn.Dropout(), linears[2]]
    return nn.Sequential(*layers).requires_grad_(False)


def build_resnet50v2(pretrained: bool = False, width: float = 1.0) -> ResNet50V2:
    # pretrained weights come from the user (create_backbone loads them); nothing is bundled.
    return ResNet50V2(width)


def build_vgg16(pretrained: bool = False, width: float = 1.0) -> VGG16:
    return VGG16(width)
