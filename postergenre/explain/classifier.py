"""A genre classifier as one PyTorch module: backbone, then head, with what it needs to be used.

The run folder stores the backbone as ONNX for fast prediction, but seeing inside a model
(gradients, hooks on stages) needs the PyTorch backbone, so here a run is rebuilt from the
backbone registry plus the saved head.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from postergenre.errors import PosterGenreError
from postergenre.models.backbones import Backbone, create_backbone
from postergenre.models.preprocessing import Preprocessing

# A fine-tuned (or from-scratch) backbone's weights, when the run folder holds them.
RUN_BACKBONE_WEIGHTS = "backbone.safetensors"
DEFAULT_THRESHOLD = 0.5


class GenreClassifier(nn.Module):
    """Posters in, one logit per genre out: ``head(backbone(x))``.

    ``flip`` averages the pooled features of the poster and its mirror image, as a run trained
    with ``flip`` does when it predicts. The module is put in eval mode: batch-norm uses its
    running statistics and dropout is off, as in prediction.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        genres: list[str],
        thresholds,
        preprocessing: Preprocessing,
        *,
        flip: bool = False,
        name: str | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.genres = list(genres)
        self.thresholds = _thresholds(thresholds, len(self.genres))
        self.preprocessing = preprocessing
        self.flip = bool(flip)
        self.name = name or backbone.name
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features), averaged with the mirror image when ``flip``."""
        features = self.backbone(x)
        if self.flip:
            features = (features + self.backbone(x.flip(-1))) / 2
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(x))
        if logits.ndim != 2 or logits.shape[1] != len(self.genres):
            raise PosterGenreError(
                f"the head gives logits of shape {tuple(logits.shape)}, expected (batch, {len(self.genres)}) "
                f"for the {len(self.genres)} genres; the head and the genre list do not belong together"
            )
        return logits

    def input_tensor(self, image) -> torch.Tensor:
        """A PIL poster as a (1, 3, h, w) network input, preprocessed as the model was trained."""
        return torch.from_numpy(self.preprocessing(image)).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, genres={len(self.genres)}, flip={self.flip}"


def classifier_from_parts(
    backbone: Backbone,
    head: nn.Module,
    genres: list[str],
    thresholds=None,
    preprocessing: Preprocessing | dict | None = None,
    *,
    flip: bool = False,
    name: str | None = None,
) -> GenreClassifier:
    """A :class:`GenreClassifier` from a backbone and a head mapping its pooled features to genre logits.

    ``thresholds`` default to 0.5 for every genre; ``preprocessing`` (a :class:`Preprocessing` or its
    dict) defaults to the backbone's own.
    """
    if isinstance(preprocessing, dict):
        preprocessing = Preprocessing.from_dict(preprocessing)
    return GenreClassifier(
        backbone,
        head,
        genres,
        thresholds,
        preprocessing or backbone.preprocessing,
        flip=flip,
        name=name,
    )


def load_classifier(run_dir: str | Path) -> GenreClassifier:
    """The classifier of a run folder, with the PyTorch backbone its features came from.

    Expects ``postergenre.training.run.load_head(run_dir) -> (head nn.Module, model_info dict)``,
    where model_info is ``model.json`` (backbone, weights, preprocessing, flip, genres, thresholds,
    name). The backbone is built from the registry: with ``RUN/backbone.safetensors`` when the run
    changed the backbone's weights (fine-tuned, or a custom CNN trained from scratch), else with the
    file or URL that model.json's ``weights`` names, else with the bundled weights.
    """
    try:
        from postergenre.training.run import load_head
    except ImportError as error:
        raise NotImplementedError(
            "loading a run folder needs the training package (postergenre.training.run.load_head), "
            "which is not installed in this tree"
        ) from error
    run_dir = Path(run_dir)
    head, info = load_head(run_dir)
    backbone = _run_backbone(run_dir, info)
    return classifier_from_parts(
        backbone,
        head,
        info["genres"],
        info.get("thresholds"),
        info.get("preprocessing"),
        flip=bool(info.get("flip", False)),
        name=info.get("name") or run_dir.resolve().name,
    )


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode (running batch-norm statistics, no dropout) with no parameter recording a graph.

    Gradients then flow only to what asks for them (an input being optimised, maps cut out of the
    graph), which is all that explaining a fixed model needs, and far cheaper. Restored on exit.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)


def _run_backbone(run_dir: Path, info: dict) -> Backbone:
    own_weights = run_dir / RUN_BACKBONE_WEIGHTS
    weights = own_weights if own_weights.is_file() else _weights_location(info.get("weights"))
    # TODO: check the rebuilt backbone against model.json's weights identity (a digest) once the
    # features package's digest function is merged, so that a run is never explained with weights
    # other than those it was trained on.
    return create_backbone(info["backbone"], weights=weights)


def _weights_location(value) -> str | None:
    """A weights file or URL named by the run, or None for the bundled weights (a digest names no file)."""
    if isinstance(value, str) and (value.startswith(("http://", "https://")) or Path(value).expanduser().is_file()):
        return value
    return None


def _thresholds(thresholds, n_genres: int) -> np.ndarray:
    if thresholds is None:
        return np.full(n_genres, DEFAULT_THRESHOLD)
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(values) != n_genres:
        raise PosterGenreError(f"got {len(values)} thresholds for {n_genres} genres; give one threshold per genre")
    return values
