"""A genre classifier as one PyTorch module: backbone, then head, with what it needs to be used.

The run folder stores the backbone as ONNX for fast prediction, but seeing inside a model
(gradients, hooks on stages) needs the PyTorch backbone, so here a run is rebuilt from the
backbone registry plus the saved head.

A model that also reads poster text (``model.json``'s ``text``) keeps the text features of the
poster being explained fixed (:meth:`GenreClassifier.read_poster_text`): gradients then flow
through the image alone, which is what a heatmap over the poster shows.
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


class EnsembleBackbone(nn.Module):
    """An ensemble's backbones side by side: one input per backbone, each preprocessed its own way,
    and their pooled features joined in the order of the ensemble head's columns."""

    def __init__(self, backbones: list[Backbone], preprocessing: list[Preprocessing]):
        super().__init__()
        self.members = nn.ModuleList(backbones)
        self.preprocessing = list(preprocessing)
        self.name = "+".join(backbone.name for backbone in backbones)
        self.gradcam_layer = ", ".join(dict.fromkeys(backbone.gradcam_layer for backbone in backbones))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([backbone(x) for backbone, x in zip(self.members, inputs, strict=True)], dim=1)


def mirrored(x: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The input's mirror image; an ensemble's inputs, each mirrored."""
    return tuple(part.flip(-1) for part in x) if isinstance(x, tuple) else x.flip(-1)


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
        text: dict | None = None,
        text_head: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        # model.json's text entry (None: the image alone) and, for late fusion, the text head.
        self.text = text or None
        self.text_head = text_head
        if self.text is not None and self.text.get("fusion") == "late" and text_head is None:
            raise PosterGenreError("a late-fusion text model needs its text head (text_head.safetensors)")
        # The text features (1, num text features) of the poster being explained; see read_poster_text.
        self.poster_text: torch.Tensor | None = None
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
            features = (features + self.backbone(mirrored(x))) / 2
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head_logits(self.features(x))
        if logits.ndim != 2 or logits.shape[1] != len(self.genres):
            raise PosterGenreError(
                f"the head gives logits of shape {tuple(logits.shape)}, expected (batch, {len(self.genres)}) "
                f"for the {len(self.genres)} genres; the head and the genre list do not belong together"
            )
        return logits

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Genre logits from pooled image features, with the poster's fixed text features for a text model."""
        if self.text is None:
            return self.head(features)
        text = self._poster_text().to(features.dtype).expand(len(features), -1)
        if self.text["fusion"] == "concat":
            return self.head(torch.cat([features, text], dim=1))
        weight = float(self.text["late_weight"])
        return weight * self.head(features) + (1 - weight) * self.text_head(text)

    def read_poster_text(self, path: str | Path) -> list:
        """OCR a poster file as the model was trained to (cached) and keep its text features for
        the next forward passes; returns its text lines (:class:`postergenre.text.ocr.TextLine`),
        or [] for an image-only model."""
        if self.text is None:
            return []
        from postergenre.inference.predictor import ocr_settings, text_features_for, text_functions

        ocr_posters, _ = text_functions()
        ocr = ocr_posters({"poster": Path(path)}, settings=ocr_settings(self.text), workers=1, progress=False)
        # The features as prediction reads them: from the store of text features when it has them.
        _, values, _ = text_features_for({"poster": Path(path)}, self.text)
        self.poster_text = torch.from_numpy(np.asarray(values[:1], dtype=np.float32))
        return list(ocr["poster"])

    def _poster_text(self) -> torch.Tensor:
        if self.poster_text is not None:
            return self.poster_text
        # No poster was read (a synthesised input, say): the features of a poster with no text, as
        # text_features gives them: a zero embedding and the no-text flag, the last column, at 1.
        width = int(self.text.get("num_features") or 0)
        if width < 1:
            raise PosterGenreError("the model's text entry has no num_features; train the run again")
        empty = torch.zeros(1, width)
        empty[0, -1] = 1.0
        return empty

    @property
    def is_ensemble(self) -> bool:
        return isinstance(self.backbone, EnsembleBackbone)

    def input_tensor(self, image) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A PIL poster as a (1, 3, h, w) network input, preprocessed as the model was trained; for an
        ensemble, one such input per backbone."""
        if self.is_ensemble:
            return tuple(torch.from_numpy(pre(image)).unsqueeze(0) for pre in self.backbone.preprocessing)
        return torch.from_numpy(self.preprocessing(image)).unsqueeze(0)

    def extra_repr(self) -> str:
        text = (self.text or {}).get("fusion", "no")
        return f"name={self.name!r}, genres={len(self.genres)}, flip={self.flip}, text={text}"


def classifier_from_parts(
    backbone: Backbone,
    head: nn.Module,
    genres: list[str],
    thresholds=None,
    preprocessing: Preprocessing | dict | None = None,
    *,
    flip: bool = False,
    name: str | None = None,
    text: dict | None = None,
    text_head: nn.Module | None = None,
) -> GenreClassifier:
    """A :class:`GenreClassifier` from a backbone and a head mapping its pooled features to genre logits.

    ``thresholds`` default to 0.5 for every genre; ``preprocessing`` (a :class:`Preprocessing` or its
    dict) defaults to the backbone's own. ``text`` and ``text_head``: how the model reads poster
    text (``model.json``'s ``text``; the text head of a late-fusion model).
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
        text=text,
        text_head=text_head,
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
    if info.get("members"):
        backbone = EnsembleBackbone(
            [
                create_backbone(member["backbone"], pooled_stages=member.get("pooled_stages", 0))
                for member in info["members"]
            ],
            [Preprocessing.from_dict(member["preprocessing"]) for member in info["members"]],
        )
    else:
        backbone = _run_backbone(run_dir, info)
    return classifier_from_parts(
        backbone,
        head,
        info["genres"],
        info.get("thresholds"),
        info.get("preprocessing"),
        flip=bool(info.get("flip", False)),
        name=info.get("name") or run_dir.resolve().name,
        text=info.get("text") or None,
        text_head=_text_head(run_dir, info.get("text") or {}),
    )


def _text_head(run_dir: Path, text: dict) -> nn.Module | None:
    """The text head of a late-fusion run, in eval mode; None for other runs."""
    if text.get("fusion") != "late":
        return None
    from safetensors.torch import load_file

    from postergenre.inference.predictor import TEXT_HEAD_WEIGHTS
    from postergenre.training.heads import head_from_description

    head = head_from_description(text["head"])
    head.load_state_dict(load_file(str(run_dir / TEXT_HEAD_WEIGHTS)))
    return head.eval()


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
    return create_backbone(info["backbone"], weights=weights, pooled_stages=info.get("pooled_stages", 0))


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
