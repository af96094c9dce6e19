"""The original work's small CNN, trained from scratch: the baseline that transfer learning must beat.

Three blocks of conv 3x3 -> batch-norm -> ReLU -> max-pool 2 -> dropout (16, 32 and 64 filters),
then the maps flattened into a dense layer of 128 units with ReLU. Its features are that
128-vector; ``forward_features`` gives the last block's maps (for Grad-CAM and ``--layer``).

At the 300x300 input the last maps are 37x37 and the dense layer sees 37*37*64 inputs, as in the
original. An adaptive average pool to that grid lets other input sizes through unchanged in
shape (at 300x300 it is the identity), so the same weights still load.
"""

from __future__ import annotations

import torch
from torch import nn

from postergenre.models.backbones import Backbone

FILTERS = (16, 32, 64)
DENSE_UNITS = 128
DROPOUT = 0.25


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(DROPOUT),
    )


class CustomCNN(Backbone):
    gradcam_layer = "block3"

    def __init__(self, input_size: tuple[int, int] = (300, 300)):
        super().__init__()
        channels = [3, *FILTERS]
        for index in range(len(FILTERS)):
            self.add_module(f"block{index + 1}", _conv_block(channels[index], channels[index + 1]))
        grid = tuple(side // 2 ** len(FILTERS) for side in input_size)
        self.dense = nn.Sequential(
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(FILTERS[-1] * grid[0] * grid[1], DENSE_UNITS),
            nn.ReLU(),
        )
        self.num_features = DENSE_UNITS
        self._set_stages([("block1", self.block1), ("block2", self.block2), ("block3", self.block3)])

    def stages(self) -> list[tuple[str, nn.Module]]:
        # The dense layer is a stage for fine-tuning ("train the last K stages") but not a map.
        return [*super().stages(), ("dense", self.dense)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.forward_features(x))


def build(pretrained: bool = False) -> CustomCNN:
    # pretrained is accepted for a uniform call; there are no weights to load (the registry logs it).
    return CustomCNN()
