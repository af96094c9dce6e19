"""The activation maps that enter a backbone's stage: what fine-tuning the stages after it trains on.

Fine-tuning the last K stages changes only what those stages compute. The stages before them (the
prefix) stay frozen, so the maps entering the first unfrozen stage are the same in every epoch:
:func:`~postergenre.features.extract.extract_features` with ``cut`` computes them once per poster,
with the same decoding threads, engines (ONNX Runtime on a CPU, PyTorch on a GPU) and content-keyed
cache as pooled features, and stores them flattened in float16, which halves disk and memory for a
rounding error (about 1e-3 relative) far below what training notices. For EfficientNet-Lite0 at
320x224 that is 320x10x7 numbers a poster before its head (K=1) and 192x10x7 before stage7 (K=2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The cache's storage type for activation maps (pooled features stay float32).
ACTIVATION_DTYPE = "float16"


class BackbonePrefix(nn.Module):
    """A backbone's stages before stage number ``cut``: posters ``(B, 3, H, W)`` to the flattened maps
    ``(B, C*h*w)`` that enter that stage. ``map_shape`` is ``(C, h, w)`` at ``input_size``.

    Flattened, the maps go through feature extraction, its ONNX export and its cache unchanged.
    """

    def __init__(self, backbone, cut: int, input_size: tuple[int, int]):
        super().__init__()
        stages = backbone.stages()
        if not 0 <= cut < len(stages):
            raise ValueError(f"cut {cut}: expected a stage number from 0 to {len(stages) - 1} of {backbone.name}")
        self.stages = nn.ModuleList(module for _, module in stages[:cut])
        self.stage = stages[cut][0]
        self.name = f"{backbone.name}-before-{self.stage}"
        self.preprocessing = backbone.preprocessing
        self.eval()
        with torch.no_grad():
            self.map_shape = tuple(self.forward_maps(torch.zeros(1, 3, *input_size)).shape[1:])
        self.num_features = math.prod(self.map_shape)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).flatten(1)

    def spec(self) -> dict:
        """What the cache key adds to a pooled-features spec: where the backbone was cut, and the storage type."""
        return {"cut": self.stage, "map_shape": list(self.map_shape), "dtype": ACTIVATION_DTYPE}


def cut_index(backbone, fine_tune: int) -> int:
    """The number of the first stage that fine-tuning the last ``fine_tune`` stages trains."""
    n_stages = len(backbone.stages())
    if not 1 <= fine_tune <= n_stages:
        raise ValueError(f"fine_tune {fine_tune}: expected 1 to {n_stages}, the stages of {backbone.name}")
    return n_stages - fine_tune
