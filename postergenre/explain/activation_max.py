"""Activation maximisation: the input that a channel (or a genre's logit) responds to most.

Gradient ascent on the input, starting from faint noise (Erhan et al. 2009; Simonyan et al. 2014),
with the regularisers that make the result look like something rather than adversarial noise
(Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization"; Olah et al.
2017, "Feature Visualization"): a random shift (jitter) of the input at every step, so that
the pattern must work wherever it lands; a Gaussian blur every few steps, which damps the high
frequencies that gradients love; an L2 penalty on the input, which keeps it near grey; and
clipping to the range of real pixel values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from postergenre.errors import PosterGenreError
from postergenre.explain.classifier import GenreClassifier, evaluating
from postergenre.explain.filters import layer_output
from postergenre.models.backbones import Backbone
from postergenre.models.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

Objective = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) input -> (B,) activation


@dataclass(frozen=True)
class AscentSettings:
    steps: int = 64
    learning_rate: float = 0.05
    jitter: int = 8  # pixels, each way
    blur_every: int = 4
    blur_sigma: float = 0.5
    l2: float = 1e-3  # per mean squared input value
    noise: float = 0.1  # the starting noise's std, in pixel values (0-1)
    seed: int = 0


@dataclass
class MaximisedInput:
    image: Image.Image  # at the network's input size
    start: float  # the target's activation on the starting noise
    end: float  # and on the result
    target: str


def channel_objective(backbone: Backbone, layer: str, channel: int) -> Objective:
    """The mean activation of ``channel`` of ``layer`` (a map's mean, or one unit of a vector)."""

    def activation(x: torch.Tensor) -> torch.Tensor:
        output = layer_output(backbone, layer, x)
        if not 0 <= channel < output.shape[1]:
            raise PosterGenreError(
                f"channel {channel} is out of range; layer {layer!r} has {output.shape[1]} channels "
                f"(0-{output.shape[1] - 1})"
            )
        return output[:, channel].flatten(1).mean(dim=1)

    return activation


def genre_objective(classifier: GenreClassifier, index: int) -> Objective:
    """The genre's logit (before the sigmoid, which would flatten the gradient once it saturates)."""
    return lambda x: classifier(x)[:, index]


def maximise(
    model: torch.nn.Module,
    objective: Objective,
    preprocessing: Preprocessing,
    *,
    target: str,
    settings: AscentSettings | None = None,
) -> MaximisedInput:
    """Synthesise the input that maximises ``objective``; report its value at the start and the end."""
    settings = settings or AscentSettings()
    generator = torch.Generator().manual_seed(settings.seed)
    low, high = _pixel_bounds(preprocessing)
    x = _starting_noise(preprocessing, settings.noise, generator)

    with evaluating(model):
        start = _value(objective, x)
        x = _ascend(objective, x, (low, high), settings, generator)
        end = _value(objective, x)

    logger.debug("%s: activation %.4g -> %.4g after %d steps", target, start, end, settings.steps)
    return MaximisedInput(_to_image(x, preprocessing), start, end, target)


def _ascend(objective: Objective, x: torch.Tensor, bounds, settings: AscentSettings, generator) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=settings.learning_rate)
    for step in range(settings.steps):
        shifted = _jitter(x, settings.jitter, generator)
        loss = -objective(shifted).mean() + settings.l2 * x.pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            last = step == settings.steps - 1
            if settings.blur_every and (step + 1) % settings.blur_every == 0 and not last:
                x.copy_(_blur(x, settings.blur_sigma))
            x.copy_(torch.maximum(torch.minimum(x, bounds[1]), bounds[0]))
    return x.detach()


def _value(objective: Objective, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(objective(x).mean())


def _starting_noise(preprocessing: Preprocessing, std: float, generator) -> torch.Tensor:
    height, width = preprocessing.input_size
    pixels = 0.5 + std * torch.randn(1, 3, height, width, generator=generator)
    return (pixels.clamp(0, 1) - _channel(preprocessing.mean)) / _channel(preprocessing.std)


def _pixel_bounds(preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values of pixel 0 and pixel 1, per channel: the range of any real image."""
    mean, std = _channel(preprocessing.mean), _channel(preprocessing.std)
    return (0 - mean) / std, (1 - mean) / std


def _channel(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


def _jitter(x: torch.Tensor, pixels: int, generator) -> torch.Tensor:
    if pixels <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(2 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel_1d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(3, 1, -1, -1)
    padded = F.pad(x, (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=3)


def _to_image(x: torch.Tensor, preprocessing: Preprocessing) -> Image.Image:
    pixels = x * _channel(preprocessing.std) + _channel(preprocessing.mean)
    array = (pixels[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)
