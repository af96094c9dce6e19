"""Grad-CAM: where on the poster the evidence for a genre lies.

Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (arXiv:1610.02391): weight each channel of the last convolutional maps ``A`` by the
spatial mean of the genre logit's gradient, ``alpha_k = mean_ij d logit / d A_k[i, j]``, sum, and
keep the positive part, ``ReLU(sum_k alpha_k A_k)``. The map is then carried back through the
preprocessing (crop, padding or stretch) onto the poster at its own size and scaled to [0, 1].

Speed: the maps are cut out of the graph where the backbone's Grad-CAM stage hands them on, and
no parameter asks for a gradient, so each genre's backward pass only runs from the logit back to
those maps (pooling and head), not through the backbone: one forward serves any number of genres.

An ensemble of backbones has one last convolutional stage per backbone, all feeding the same logit.
Its map is Grad-CAM over the union of their channels: each backbone's signed map is carried onto
the poster as a density (times its number of positions, since a mean-pooled network's logit is the
mean of its map), the maps are summed, and the positive part kept.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from postergenre.errors import PosterGenreError
from postergenre.explain.classifier import GenreClassifier, evaluating
from postergenre.models.preprocessing import Preprocessing


@dataclass
class GenreCam:
    """One genre's Grad-CAM on one poster."""

    genre: str
    index: int
    probability: float
    threshold: float
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], at the poster's size

    @property
    def predicted(self) -> bool:
        return self.probability >= self.threshold


@dataclass
class Explanation:
    """Every genre's probability for one poster, and the Grad-CAM of the genres asked for."""

    probabilities: np.ndarray  # (n_genres,)
    cams: list[GenreCam]
    layer: str  # the backbone stage whose maps were used
    backbone: str
    notes: list[str] = field(default_factory=list)  # what the reader needs to read the heatmaps right

    @property
    def caption(self) -> str:
        stage = "stages" if "+" in self.layer else "stage"
        return f"Grad-CAM at {self.backbone} {stage} '{self.layer}' ({layers_kind(self.layer)})"


def grad_cam(classifier: GenreClassifier, image: Image.Image, genre_index: int) -> tuple[np.ndarray, float]:
    """One genre's heatmap, (H, W) in [0, 1] at the poster's size, and its probability."""
    cam = explain_image(classifier, image, [genre_index]).cams[0]
    return cam.heatmap, cam.probability


def explain_image(
    classifier: GenreClassifier,
    image: Image.Image,
    genre_indices: list[int] | None = None,
    *,
    top: int = 3,
) -> Explanation:
    """Grad-CAM of the given genres, or of the ``top`` most probable ones, from a single forward pass."""
    x = classifier.input_tensor(image)
    maps, logits = _forward_keeping_maps(classifier, x)
    probabilities = torch.sigmoid(logits[0].detach()).double().numpy()
    indices = _check_indices(genre_indices, classifier.genres) if genre_indices else top_genres(probabilities, top)

    cams = [_genre_cam(classifier, maps, logits, probabilities, index, image.size) for index in indices]
    backbone = classifier.backbone
    notes = reading_notes(classifier)
    return Explanation(probabilities, cams, layer=evidence_layers(backbone), backbone=backbone.name, notes=notes)


def members(backbone) -> list:
    """The backbones of an ensemble, or the one backbone."""
    return list(backbone.members) if hasattr(backbone, "members") else [backbone]


def evidence_layers(backbone) -> str:
    """The names of the stages a heatmap sums: ``head``, or ``head + stage7, stage6, stage5``."""
    pooled = max(member.pooled_stages for member in members(backbone))
    if not pooled:
        return backbone.gradcam_layer
    stages = [name for name, _ in members(backbone)[0].stages()]
    return f"{backbone.gradcam_layer} + {', '.join(stages[-2 : -2 - pooled : -1])}"


def layers_kind(layers: str) -> str:
    """What :func:`evidence_layers` names, in words for a caption."""
    return "last conv stage and pooled stages, summed" if "+" in layers else "last conv stage"


def _genre_cam(classifier, maps, logits, probabilities, index: int, poster_size: tuple[int, int]) -> GenreCam:
    if len(maps) > 1:
        # Several stages give evidence (an ensemble's backbones, pooled stages): their signed maps in
        # logit per position, each carried onto the poster at its own resolution, summed before the ReLU.
        heatmap = normalise(
            np.sum([_density(m, logits[0, index], classifier.flip, pre, poster_size) for m, pre in maps], axis=0)
        )
    else:
        ((stage_maps, preprocessing),) = maps
        heatmap = to_poster(_coarse_cam(stage_maps, logits[0, index], classifier.flip), preprocessing, poster_size)
    return GenreCam(
        genre=classifier.genres[index],
        index=index,
        probability=float(probabilities[index]),
        threshold=float(classifier.thresholds[index]),
        heatmap=heatmap,
    )


def _density(maps, logit, flip: bool, preprocessing: Preprocessing, poster_size: tuple[int, int]) -> np.ndarray:
    """One backbone's signed map on the poster, in logit per position: comparable between backbones
    whose maps have different numbers of positions."""
    height, width = maps[0].shape[-2:]
    return at_poster(_signed_cam(maps, logit, flip) * (height * width), preprocessing, poster_size)


def reading_notes(classifier: GenreClassifier) -> list[str]:
    """What a reader must know to read the heatmaps right, for this classifier."""
    notes = []
    if classifier.preprocessing.resize == "center_crop":
        notes.append("The network sees only the centre crop of the poster; the parts cut off get no heat.")
    if classifier.flip:
        notes.append("The model averages the poster and its mirror image; the map sums both, mirrored back.")
    if classifier.is_ensemble:
        notes.append(
            f"The model is an ensemble of {len(classifier.backbone.members)} backbones, each reading the poster at its "
            "own input; the map sums their last stages' evidence."
        )
    pooled = max(backbone.pooled_stages for backbone in members(classifier.backbone))
    if pooled:
        notes.append(
            f"The features also pool the {pooled} stages before the last; the map sums the evidence of each, "
            "every stage's map carried onto the poster at its own resolution."
        )
    if classifier.text is not None:
        notes.append(
            f"The model also reads the poster's text ({classifier.text['fusion']} fusion), held fixed here: the map "
            "shows the picture's evidence, the probabilities include the text's."
        )
    return notes


def text_read(classifier: GenreClassifier, lines: list) -> list | None:
    """Of the OCR lines of a poster (``classifier.read_poster_text``), those the model reads, in reading
    order (confident ones with text, as its text features take them); None for an image-only model."""
    if classifier.text is None:
        return None
    from postergenre.text.embed import lines_read

    return lines_read(lines, min_confidence=float(classifier.text["min_confidence"]))


def top_genres(probabilities: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` most probable genres, most probable first."""
    if k < 1:
        raise PosterGenreError(f"--top must be at least 1, got {k}")
    return [int(i) for i in np.argsort(-np.asarray(probabilities), kind="stable")[:k]]


def _check_indices(indices: list[int], genres: list[str]) -> list[int]:
    for index in indices:
        if not 0 <= index < len(genres):
            raise PosterGenreError(
                f"genre index {index} is out of range; the model has {len(genres)} genres (0-{len(genres) - 1}): "
                f"{', '.join(genres)}"
            )
    return [int(i) for i in indices]


# ---- the forward pass and the map ------------------------------------------------------------


def _forward_keeping_maps(classifier: GenreClassifier, x) -> tuple[list, torch.Tensor]:
    """Logits (1, n_genres), and ``[(maps, preprocessing)]``: for each stage whose pooled output the
    head reads (every backbone's Grad-CAM stage and its pooled stages), its maps as graph leaves (one
    per view: poster, mirror) and the preprocessing of the backbone it belongs to."""
    if classifier.is_ensemble:
        backbones = zip(classifier.backbone.members, classifier.backbone.preprocessing, strict=True)
    else:
        backbones = [(classifier.backbone, classifier.preprocessing)]
    stages = [(stage, preprocessing) for backbone, preprocessing in backbones for stage in evidence_stages(backbone)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(evaluating(classifier))
        maps = [(stack.enter_context(_maps_as_leaves(stage)), preprocessing) for stage, preprocessing in stages]
        stack.enter_context(torch.enable_grad())
        logits = classifier(x)
    return maps, logits


def evidence_stages(backbone) -> list[torch.nn.Module]:
    """The stages whose maps the features pool: the Grad-CAM stage, then the backbone's pooled stages."""
    stages = backbone.stages()
    pooled = [module for _, module in stages[len(stages) - 1 - backbone.pooled_stages : -1]]
    return [dict(stages)[backbone.gradcam_layer], *pooled[::-1]]


@contextlib.contextmanager
def _maps_as_leaves(stage: torch.nn.Module):
    """Replace the stage's output by a leaf that asks for a gradient; collect one per call."""
    maps: list[torch.Tensor] = []

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        maps.append(leaf)
        return leaf

    handle = stage.register_forward_hook(hook)
    try:
        yield maps
    finally:
        handle.remove()


def _coarse_cam(maps: list[torch.Tensor], logit: torch.Tensor, flip: bool) -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k) at the maps' resolution, (h, w); the mirror view's map flipped back."""
    return torch.relu(_signed_cam(maps, logit, flip))


def _signed_cam(maps: list[torch.Tensor], logit: torch.Tensor, flip: bool) -> torch.Tensor:
    """sum_k alpha_k A_k at the maps' resolution, (h, w), before the ReLU."""
    gradients = torch.autograd.grad(logit, maps, retain_graph=True, allow_unused=True)
    total = torch.zeros(maps[0].shape[-2:])
    for view, (activations, gradient) in enumerate(zip(maps, gradients, strict=True)):
        if gradient is None:  # the logit does not depend on these maps (a constant head)
            continue
        alpha = gradient.mean(dim=(2, 3), keepdim=True)
        cam = (alpha * activations.detach()).sum(dim=1)[0]
        # With flip, the second view saw the mirror image: its map points at mirrored places.
        total += cam.flip(-1) if flip and view % 2 == 1 else cam
    return total


# ---- back onto the poster --------------------------------------------------------------------


def to_poster(coarse: torch.Tensor, preprocessing: Preprocessing, poster_size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map over the network's input, carried back through the resize policy to (H, W) in [0, 1].

    Parts of the poster the network never saw (cut off by ``center_crop``) get 0.
    """
    return normalise(at_poster(coarse, preprocessing, poster_size))


def at_poster(coarse: torch.Tensor, preprocessing: Preprocessing, poster_size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map over the network's input at the poster's (H, W), its values kept (signs too)."""
    height, width = preprocessing.input_size
    at_input = F.interpolate(coarse[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    at_input = at_input[0, 0].numpy()
    if preprocessing.resize == "pad":
        heat = _unpad(at_input, preprocessing, poster_size)
    elif preprocessing.resize == "center_crop":
        heat = _uncrop(at_input, preprocessing, poster_size)
    else:
        heat = _resize(at_input, poster_size)
    return heat


def normalise(heat: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the maximum; a map with nothing positive stays all zeros (never NaN)."""
    heat = np.clip(np.nan_to_num(heat.astype(np.float32), nan=0.0), 0.0, None)
    peak = float(heat.max()) if heat.size else 0.0
    return np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)


def _resize(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float map to ``size`` (W, H), bilinear."""
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR)
    )


def _unpad(heat: np.ndarray, preprocessing: Preprocessing, poster_size: tuple[int, int]) -> np.ndarray:
    # The same arithmetic as Preprocessing.resize_image's "pad" branch, run backwards.
    height, width = preprocessing.input_size
    scale = min(width / poster_size[0], height / poster_size[1])
    shown = (max(1, round(poster_size[0] * scale)), max(1, round(poster_size[1] * scale)))
    left, top = (width - shown[0]) // 2, (height - shown[1]) // 2
    return _resize(heat[top : top + shown[1], left : left + shown[0]], poster_size)


def _uncrop(heat: np.ndarray, preprocessing: Preprocessing, poster_size: tuple[int, int]) -> np.ndarray:
    # The same arithmetic as Preprocessing.resize_image's "center_crop" branch, run backwards.
    height, width = preprocessing.input_size
    scale = max(width, height) / preprocessing.crop_fraction / min(poster_size)
    resized = (max(width, round(poster_size[0] * scale)), max(height, round(poster_size[1] * scale)))
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    canvas = np.zeros((resized[1], resized[0]), dtype=np.float32)
    canvas[top : top + height, left : left + width] = heat
    return _resize(canvas, poster_size)
