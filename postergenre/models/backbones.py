"""The backbone registry: every image network the tool can use, created by name.

A backbone turns a batch of preprocessed posters ``(B, 3, H, W)`` into pooled features
``(B, num_features)``; a head (elsewhere) turns features into genre logits. Each backbone carries
the :class:`Preprocessing` its weights expect, and names its stages so that the CLI can pick a
layer (``--layer``), fine-tune the last K stages and point Grad-CAM at the last convolutional one.

Registered backbones:

========================  =================================  ==========================
name                      weights                            input (mean / std)
========================  =================================  ==========================
``efficientnet_lite0``    bundled (ImageNet)                 224, 0.498 / 0.502
``efficientnet_lite1``    bundled (ImageNet)                 240, 0.498 / 0.502
``efficientnet_lite2``    bundled (ImageNet)                 260, 0.498 / 0.502
``mobilenet_v2``          bundled (ImageNet, torchvision)    224, ImageNet mean / std
``custom_cnn``            none (trained from scratch)        300, 0.5 / 0.5
``resnet50v2``            the user's file or URL             224, 0.5 / 0.5
``vgg16``                 the user's file or URL             224, ImageNet mean / std
========================  =================================  ==========================

Nothing here downloads anything unless the user passes a URL as ``weights``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from postergenre.errors import PosterGenreError
from postergenre.models.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite models were trained on (pixel - 127) / 128 over 0-255 pixels. On this
# check the ImageNet mean/std also works but is less sure (lite0 on skimage coffee: espresso 0.84 vs 0.96).
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

USER_WEIGHTS_FORMAT = "a PyTorch state dict for this module, .pth or .safetensors"


class Backbone(nn.Module):
    """An image network cut before its classifier: pooled features, stage maps, Grad-CAM target.

    Subclasses build their layers, then call :meth:`_set_stages` with the ordered blocks that
    ``forward_features`` runs. A stage's module is called in the forward pass, so a forward hook
    on it sees that stage's output, and it holds that stage's parameters (for freezing).
    """

    name: str = ""
    num_features: int
    preprocessing: Preprocessing
    pretrained: bool = False
    weights_source: str | None = None  # where the loaded weights came from, for saved models
    gradcam_layer: str
    # How many stages before the last add their pooled outputs to the features (set_pooled_stages).
    pooled_stages: int = 0

    def _set_stages(self, stages: list[tuple[str, nn.Module]]) -> None:
        # A plain tuple, not registered children: stage modules may be views (slices) over layers
        # that are registered under their original names, which keeps state dict keys compatible
        # with the weights files (torchvision, efficientnet_lite_pytorch).
        self._stage_list = tuple(stages)

    def stages(self) -> list[tuple[str, nn.Module]]:
        return list(self._stage_list)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self._stage_list:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: the last stage's map averaged over space, then (with pooled stages) the
        averages of the ``pooled_stages`` stages before it, nearest first."""
        if not self.pooled_stages:
            return self.forward_features(x).mean(dim=(2, 3))
        first_pooled = len(self._stage_list) - 1 - self.pooled_stages
        pooled = []
        for index, (_, stage) in enumerate(self._stage_list):
            x = stage(x)
            if index >= first_pooled:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled[::-1], dim=1)

    def set_pooled_stages(self, count: int) -> None:
        """Add the pooled outputs of the ``count`` stages before the last to the features (0: none).

        Mid-level stages see textures, lettering and layout that the last stage has abstracted away;
        see :data:`POOLED_STAGES` for what they measured on posters.
        """
        names = [name for name, _ in self._stage_list]
        if type(self).forward is not Backbone.forward:
            raise ValueError(f"{self.name}: its features are not pooled stage maps; expected pooled_stages=0")
        if not 0 <= count < len(names):
            raise ValueError(
                f"{self.name}: pooled_stages must be 0 to {len(names) - 1} (the stages before {names[-1]}), got {count}"
            )
        widths = self.stage_widths()
        self.pooled_stages = int(count)
        self.num_features = widths[-1] + sum(widths[len(widths) - 1 - count : -1])

    def stage_widths(self) -> list[int]:
        """The channels of each stage's output, from a forward pass on a tiny input."""
        was_training = self.training
        x = torch.zeros(1, 3, 64, 64)
        widths = []
        try:
            with torch.no_grad():
                for _, stage in self.eval()._stage_list:
                    x = stage(x)
                    widths.append(int(x.shape[1]))
        finally:
            self.train(was_training)
        return widths

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1000) logits from the network's original ImageNet classifier: a check that the weights work."""
        if type(self)._imagenet_logits is Backbone._imagenet_logits:
            raise PosterGenreError(f"backbone {self.name!r} has no ImageNet classifier")
        if not self.pretrained:
            raise PosterGenreError(
                f"backbone {self.name!r} has random weights, so its ImageNet classifier means nothing; "
                "create it with pretrained=True (or weights=...)"
            )
        return self._imagenet_logits(x)

    def _imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_features={self.num_features}, pretrained={self.pretrained}"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone, and what it expects, without building it."""

    name: str
    description: str
    builder: str  # "module:function", called as function(pretrained=bool, **options) -> Backbone
    preprocessing: Preprocessing
    num_features: int
    weights: str  # "bundled" (shipped in an installed package), "user" (weights=PATH|URL) or "none"
    weights_hint: str = ""  # for "user": the expected file, named in the error when it is missing
    # Stages before the last whose pooled outputs join the features by default (see POOLED_STAGES);
    # num_features above counts them.
    pooled_stages: int = 0
    options: dict = field(default_factory=dict)


# Stages before the last whose pooled outputs join an EfficientNet-Lite's features. Measured on the
# shared dataset (standard split; lite0 at 256x160, the default 256-wide MLP head; late fusion with the
# poster text head), validation / test macro ROC-AUC and test macro AP:
#
#     pooled features                      image                   image + text (late)
#     last stage (head) only               0.778 / 0.748 / 0.282   0.806 / 0.788 / 0.322
#     + max over space of the head         0.772 / 0.747 / 0.285   -
#     head in 3 horizontal bands           0.767 / 0.741 / 0.277   -
#     + stage7                             0.781 / 0.752 / 0.289   0.809 / 0.789 / 0.333
#     + stage7, stage6, stage5             0.783 / 0.757 / 0.302   0.810 / 0.795 / 0.340
#     + stage7 ... stage4                  0.787 / 0.757 / 0.295   0.812 / 0.793 / 0.337
#     + every stage                        0.785 / 0.761 / 0.302   0.811 / 0.796 / 0.339
#
# Three is the fewest within seed noise (about 0.002) of the best on validation. The stages are in
# the same forward pass, so extraction costs nothing more; the head's input grows from 1280 to 1904.
# MobileNetV2 (same input, same heads), image / image + text: last stage only 0.769 / 0.748 / 0.285
# and 0.803 / 0.788 / 0.331; with three stages 0.775 / 0.756 / 0.293 and 0.806 / 0.791 / 0.335, so it
# pools three too. resnet50v2 and vgg16, with weights from the user, were not measured: they pool none.
POOLED_STAGES = 3


def _lite_spec(size: str, resolution: int, pooled_widths: tuple[int, ...]) -> BackboneSpec:
    """EfficientNet-Lite``size``, with its bundled weights and :data:`POOLED_STAGES` pooled stages."""
    assert len(pooled_widths) == POOLED_STAGES, "one width per pooled stage"
    return BackboneSpec(
        name=f"efficientnet_lite{size}",
        description=f"EfficientNet-Lite{size} (ReLU6, no squeeze-excitation), ImageNet weights converted from the "
        f"TF release; {resolution}x{resolution} input",
        builder="postergenre.models.efficientnet_lite:build",
        preprocessing=Preprocessing((resolution, resolution), LITE_MEAN, LITE_STD),
        num_features=1280 + sum(pooled_widths),
        weights="bundled",
        options={"variant": f"efficientnet-lite{size}"},
        pooled_stages=POOLED_STAGES,
    )


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        # The widths of stage5, stage6 and stage7, pooled beside the 1280 of the head.
        _lite_spec("0", 224, pooled_widths=(112, 192, 320)),
        _lite_spec("1", 240, pooled_widths=(112, 192, 320)),
        _lite_spec("2", 260, pooled_widths=(120, 208, 352)),
        BackboneSpec(
            name="mobilenet_v2",
            description="MobileNetV2 (width 1.0), torchvision's ImageNet weights; 224x224 input",
            builder="postergenre.models.mobilenet_v2:build",
            preprocessing=Preprocessing((224, 224), IMAGENET_MEAN, IMAGENET_STD),
            num_features=1280 + 96 + 160 + 320,  # the head and the pooled stage5, stage6, stage7
            weights="bundled",
            pooled_stages=POOLED_STAGES,
        ),
        BackboneSpec(
            name="custom_cnn",
            description="small CNN trained from scratch: three conv blocks (16/32/64 filters), dense 128; 300x300",
            builder="postergenre.models.custom_cnn:build",
            # The whole poster squeezed to a square, as the original work's image loader did.
            preprocessing=Preprocessing((300, 300), (0.5,) * 3, (0.5,) * 3, resize="stretch"),
            num_features=128,
            weights="none",
        ),
        BackboneSpec(
            name="resnet50v2",
            description="ResNet-50 v2 (pre-activation, as Keras ResNet50V2); weights from the user; 224x224",
            builder="postergenre.models.resnet_vgg:build_resnet50v2",
            preprocessing=Preprocessing((224, 224), (0.5,) * 3, (0.5,) * 3),
            num_features=2048,
            weights="user",
            weights_hint="keys as postergenre.models.resnet_vgg.ResNet50V2.state_dict(); Keras layer "
            "convS_blockB_K_conv is stage{S-1}.block{B}.convK (see that module)",
        ),
        BackboneSpec(
            name="vgg16",
            description="VGG16 (no batch-norm), torchvision layout; weights from the user; 224x224",
            builder="postergenre.models.resnet_vgg:build_vgg16",
            preprocessing=Preprocessing((224, 224), IMAGENET_MEAN, IMAGENET_STD),
            num_features=512,
            weights="user",
            weights_hint="keys as torchvision's vgg16, e.g. its vgg16-397923af.pth",
        ),
    ]
}


def list_backbones() -> list[str]:
    return list(REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    if name not in REGISTRY:
        raise PosterGenreError(f"unknown backbone {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def backbone_info(name: str) -> dict:
    """What a backbone is and expects, without building it (nothing heavy is loaded)."""
    spec = get_spec(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "preprocessing": spec.preprocessing.to_dict(),
        "num_features": spec.num_features,
        "pooled_stages": spec.pooled_stages,
        "weights": spec.weights,
        "needs_user_weights": spec.weights == "user",
        "weights_format": f"{USER_WEIGHTS_FORMAT}; {spec.weights_hint}" if spec.weights_hint else USER_WEIGHTS_FORMAT,
    }


def create_backbone(
    name: str, *, pretrained: bool = True, weights: str | Path | None = None, pooled_stages: int | None = None
) -> Backbone:
    """Build a registered backbone, with its pretrained weights when ``pretrained``.

    ``pooled_stages``: how many stages before the last add their pooled outputs to the features
    (:meth:`Backbone.set_pooled_stages`); default the registry's choice for this backbone.

    ``weights`` (a local file or an http(s) URL, see :func:`postergenre.models.weights.resolve_weights`)
    replaces the bundled weights, or supplies them for backbones that ship none; it is loaded
    strictly, whatever ``pretrained`` says. The backbone is returned in training mode, like any
    new ``nn.Module``: call ``.eval()`` before extracting features.
    """
    spec = get_spec(name)
    if weights is None and pretrained and spec.weights == "user":
        raise PosterGenreError(
            f"backbone {name!r} ships no pretrained weights; pass weights=PATH or URL (--weights on the command "
            f"line) with {USER_WEIGHTS_FORMAT} ({spec.weights_hint}), or pretrained=False to train it from scratch"
        )
    if pretrained and spec.weights == "none" and weights is None:
        logger.info("backbone %s has no pretrained weights; building it with random initialisation", name)

    backbone = _build(spec, pretrained=pretrained and weights is None and spec.weights == "bundled")
    backbone.name = spec.name
    backbone.preprocessing = spec.preprocessing
    if weights is not None:
        _load_user_weights(backbone, weights)
    pooled_stages = spec.pooled_stages if pooled_stages is None else pooled_stages
    if pooled_stages:
        backbone.set_pooled_stages(pooled_stages)
    return backbone


def _build(spec: BackboneSpec, pretrained: bool) -> Backbone:
    module_name, function_name = spec.builder.split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    return builder(pretrained=pretrained, **spec.options)


def _load_user_weights(backbone: Backbone, weights: str | Path) -> None:
    from postergenre.models.weights import load_state_dict_file, load_strict, resolve_weights

    path = resolve_weights(weights)
    load_strict(backbone, load_state_dict_file(path), source=str(path))
    backbone.pretrained = True
    backbone.weights_source = str(weights)
