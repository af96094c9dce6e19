"""Every setting of a training run, in one place, with the defaults that measured best.

The defaults were chosen on the VALIDATION split of the shared movie-poster dataset (7242 posters,
23 genres with >= 10 positives, EfficientNet-Lite0 features of the whole poster stretched to
320x224, averaged with its mirror image); see ``benchmarks/head_comparison.py`` for the table.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from importlib import metadata

from postergenre.data.genres import DEFAULT_MIN_POSITIVES

MODES = ("multilabel", "per-genre")
HEADS = ("linear", "mlp")
DEFAULT_BACKBONE = "efficientnet_lite0"
# Posters are about 2:3 (tall); an input of this height-to-width ratio keeps the whole poster
# with little distortion when it is stretched or padded instead of cropped.
POSTER_ASPECT = 10 / 7


@dataclass
class TrainConfig:
    """The resolved settings of one run; written to ``config.json``."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    resize: str = "stretch"
    input_size: tuple[int, int] | None = None  # None: the backbone's, reshaped to a poster for stretch/pad
    flip: bool = True
    mode: str = "multilabel"
    head: str = "linear"
    hidden: int | None = None  # None: 512 for a shared MLP, 64 per genre for a per-genre MLP
    dropout: float = 0.3
    loss: str = "bce"
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05
    epochs: int = 100
    patience: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256  # 0: full batch
    min_positives: int = DEFAULT_MIN_POSITIVES
    # Genres with fewer test positives than this are shown but kept out of the macro figures.
    min_test_positives: int = 10
    seed: int = 0
    feature_batch_size: int = 32
    # Heads on cached features are small: one thread trains a linear head as fast as several, and
    # avoids the collapse we measured (5-20x slower per step) when other processes share the cores.
    threads: int | None = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.epochs < 1 or self.patience < 1:
            raise ValueError(f"epochs and patience must be at least 1, got {self.epochs} and {self.patience}")
        if self.input_size is not None:
            self.input_size = tuple(int(v) for v in self.input_size)

    @property
    def head_type(self) -> str:
        """The head class: a per-genre MLP keeps one small MLP per genre, nothing shared."""
        return "per_genre_mlp" if self.mode == "per-genre" and self.head == "mlp" else self.head

    @property
    def hidden_size(self) -> int:
        if self.hidden is not None:
            return self.hidden
        return 64 if self.head_type == "per_genre_mlp" else 512

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_size"] = list(self.input_size) if self.input_size else None
        data["head_type"], data["hidden"] = self.head_type, self.hidden_size
        return data


def poster_input_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """A backbone's square input reshaped to a poster: same width, height a multiple of 32."""
    _, width = input_size
    return (max(32, round(width * POSTER_ASPECT / 32) * 32), width)


def resolve_preprocessing(config: TrainConfig):
    """The backbone's own preprocessing with the run's resize policy and input size."""
    from postergenre.features import default_preprocessing

    base = default_preprocessing(config.backbone)
    input_size = config.input_size
    if input_size is None:
        input_size = poster_input_size(base.input_size) if config.resize in ("stretch", "pad") else base.input_size
    config.input_size = tuple(input_size)
    return base.with_policy(config.resize, tuple(input_size))


def versions() -> dict:
    """Versions of Python and of the libraries whose behaviour shapes a run's numbers."""
    found = {"python": platform.python_version()}
    for package in ("postergenre", "torch", "numpy", "scikit-learn", "onnxruntime", "pillow", "safetensors"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    from postergenre import __version__

    found["postergenre"] = __version__
    return found
