"""Layers by name, the filters of a convolution, and the feature maps a poster produces.

A layer is named as the user writes it after ``--layer``: a backbone stage (``stage3``, ``head``,
``block2``), or a module inside one, addressed by its path below the stage (``stage7.0``,
``block2.0``, ``stem.conv``). Hooks on a layer see its output in the backbone's forward pass.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from postergenre.errors import PosterGenreError
from postergenre.models.backbones import Backbone

logger = logging.getLogger(__name__)

MAX_FILTERS = 64  # a grid of more tiles than this shows nothing one can look at
STRONGEST_CHANNELS = 16


@dataclass
class Grid:
    """A picture made of tiles, and what each tile shows."""

    image: Image.Image
    labels: list[str]
    source: str = ""  # the layer (and module in it) the tiles come from

    @property
    def n_tiles(self) -> int:
        return len(self.labels)


# ---- layers ----------------------------------------------------------------------------------


def layer_names(backbone: Backbone, *, depth: int = 2) -> list[str]:
    """Names usable as ``--layer``: the stages, and (``depth`` 2) the modules directly inside each."""
    names = []
    for stage_name, stage in backbone.stages():
        names.append(stage_name)
        if depth > 1:
            names += [f"{stage_name}.{child}" for child, _ in stage.named_children()]
    return names


def resolve_layer(backbone: Backbone, name: str) -> nn.Module:
    """The module named ``name`` (``stage`` or ``stage.path.below``); an unknown name lists the valid ones."""
    stage_name, _, below = name.partition(".")
    stages = dict(backbone.stages())
    if stage_name in stages:
        try:
            return stages[stage_name].get_submodule(below) if below else stages[stage_name]
        except AttributeError:
            pass
    raise PosterGenreError(
        f"unknown layer {name!r} for backbone {backbone.name}; expected one of {', '.join(layer_names(backbone))} "
        "(see --list-layers)"
    )


@contextlib.contextmanager
def capture_output(module: nn.Module, *, stop: bool = False):
    """Collect ``module``'s output in the forward pass; with ``stop``, end the pass there.

    Stopping saves the rest of the network's work when only this layer is wanted; the caller
    runs the forward inside this context and catches nothing (the stop is swallowed here).
    """
    outputs: list[torch.Tensor] = []

    def hook(module, inputs, output):
        outputs.append(output)
        if stop:
            raise _Reached

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    except _Reached:
        pass
    finally:
        handle.remove()


class _Reached(Exception):
    """Raised by a hook to end a forward pass at the layer of interest."""


def layer_output(backbone: Backbone, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``layer`` for input ``x``, computing no more of the network than needed."""
    with capture_output(resolve_layer(backbone, layer), stop=True) as outputs:
        backbone(x)
    if not outputs:
        raise PosterGenreError(f"layer {layer!r} is not used in {backbone.name}'s forward pass; pick another")
    return outputs[0]


# ---- filters ---------------------------------------------------------------------------------


def first_convolution(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first 2D convolution inside ``module`` (in registration order), with its path."""
    for path, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            return path, child
    raise PosterGenreError(f"{type(module).__name__} holds no convolution, so it has no filters to show")


def filter_grid(
    backbone: Backbone, layer: str | None = None, *, tile: int = 40, max_filters: int = MAX_FILTERS
) -> Grid:
    """The filters of the first convolution of ``layer`` (default: the network's first layer) as a grid.

    Each filter is min-max scaled on its own; filters over 3 input channels show as RGB, others as
    the grey mean over their input channels. At most ``max_filters`` filters are drawn.
    """
    from postergenre.explain import render

    stage_name = layer or backbone.stages()[0][0]
    path, conv = first_convolution(resolve_layer(backbone, stage_name))
    weights = conv.weight.detach().float().numpy()
    if len(weights) > max_filters:
        logger.info("showing the first %d of the %d filters", max_filters, len(weights))
        weights = weights[:max_filters]
    tiles = [render.filter_tile(w, tile) for w in weights]
    name = f"{stage_name}.{path}" if path else stage_name
    return Grid(render.grid(tiles), [f"{name} #{k}" for k in range(len(tiles))], source=name)


# ---- feature maps ----------------------------------------------------------------------------


@torch.no_grad()
def feature_maps(backbone: Backbone, layer: str, x: torch.Tensor) -> np.ndarray:
    """The (C, h, w) maps of one preprocessed poster ``x`` (1, 3, H, W) at ``layer``."""
    output = layer_output(backbone.eval(), layer, x)
    if output.ndim != 4:
        raise PosterGenreError(
            f"layer {layer!r} gives a vector of {output.shape[-1]} values, not maps; pick a convolutional layer "
            f"such as {backbone.gradcam_layer!r}"
        )
    return output[0].float().numpy()


def strongest_channels(maps: np.ndarray, k: int = STRONGEST_CHANNELS) -> list[int]:
    """The ``k`` channels with the highest mean activation, strongest first."""
    means = maps.reshape(len(maps), -1).mean(axis=1)
    return [int(c) for c in np.argsort(-means, kind="stable")[:k]]


def feature_map_grid(maps: np.ndarray, k: int = STRONGEST_CHANNELS, *, tile: int = 96) -> Grid:
    """The ``k`` strongest channels' maps, each scaled on its own, labelled with channel and mean."""
    from postergenre.explain import render

    channels = strongest_channels(maps, k)
    tiles = [render.map_tile(maps[c], tile) for c in channels]
    labels = [f"#{c}: mean {maps[c].mean():.3g}" for c in channels]
    return Grid(render.grid(tiles, labels=labels), labels)
