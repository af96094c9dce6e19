"""The run report's "explained examples": Grad-CAM on the model's most confident right and wrong answers.

For a few genres (those with the most test positives), the posters the model was surest were
that genre and were (right), and those it was surest were that genre and were not (wrong; when
there are too few, the positives it missed by the widest margin). Seeing both side by side shows
whether the model looks at the poster's content or at something that merely comes with the genre.
For a model that reads poster text, the text it read on each poster is outlined and listed too.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

THUMBNAIL_HEIGHT = 240
_FIGURE_STYLE = "display:inline-block;vertical-align:top;margin:0 0.6em 0.8em 0;width:{width}px"


@dataclass
class Example:
    row: int
    kind: str  # "right", "false positive" or "missed"
    score: float


def explained_examples_html(
    classifier,
    image_paths,
    y_true,
    y_score,
    genres: list[str],
    n_genres: int = 3,
    per_kind: int = 2,
) -> str:
    """An HTML section (heatmaps as data-URI JPEGs) for ``write_report(..., extra_sections=[(title, html)])``.

    ``image_paths``, ``y_true`` (0/1) and ``y_score`` (probabilities) are row-aligned; the columns of
    ``y_true``/``y_score`` are ``genres``, which must be among the classifier's genres. Thresholds are
    the classifier's.
    """
    y_true, y_score = _check_inputs(image_paths, y_true, y_score, genres, classifier.genres)
    columns = chosen_genres(y_true, n_genres)
    parts = [_introduction(classifier, per_kind)]
    for column in columns:
        index = classifier.genres.index(genres[column])
        threshold = float(classifier.thresholds[index])
        examples = pick_examples(y_true[:, column], y_score[:, column], threshold, per_kind)
        parts.append(_genre_section(classifier, genres, column, index, examples, image_paths, y_true, threshold))
    if not columns:
        parts.append('<p class="note">No genre has a positive test poster, so there is nothing to explain.</p>')
    return "\n".join(parts)


def chosen_genres(y_true: np.ndarray, n_genres: int) -> list[int]:
    """The columns of the ``n_genres`` genres with the most positives (at least one), most first."""
    positives = y_true.sum(axis=0)
    order = np.argsort(-positives, kind="stable")
    return [int(c) for c in order[:n_genres] if positives[c] > 0]


def pick_examples(truth: np.ndarray, score: np.ndarray, threshold: float, per_kind: int) -> list[Example]:
    """The most confident right answers (true positives, highest score first), then the most confident
    wrong ones: false positives by highest score, topped up with missed positives by lowest score."""
    predicted = score >= threshold
    true_positive = np.flatnonzero((truth == 1) & predicted)
    false_positive = np.flatnonzero((truth == 0) & predicted)
    missed = np.flatnonzero((truth == 1) & ~predicted)

    right = [Example(int(r), "right", float(score[r])) for r in _by_score(true_positive, score, highest=True)]
    wrong = [Example(int(r), "false positive", float(score[r])) for r in _by_score(false_positive, score, True)]
    wrong += [Example(int(r), "missed", float(score[r])) for r in _by_score(missed, score, highest=False)]
    return right[:per_kind] + wrong[:per_kind]


def _by_score(rows: np.ndarray, score: np.ndarray, highest: bool) -> np.ndarray:
    keys = -score[rows] if highest else score[rows]
    return rows[np.argsort(keys, kind="stable")]


# ---- HTML ------------------------------------------------------------------------------------


def _introduction(classifier, per_kind: int) -> str:
    backbone = classifier.backbone
    text = ""
    if classifier.text is not None:
        text = (
            " The model also reads the poster's text, held fixed for the heatmap: magenta outlines mark the lines "
            "it read (OCR), numbered as in the caption; scores are the whole model's, text included."
        )
    from postergenre.explain.gradcam import evidence_layers, layers_kind

    layers = evidence_layers(backbone)
    return (
        f'<p class="note">Grad-CAM (Selvaraju et al. 2017) at {_e(backbone.name)} stage '
        f"'{_e(layers)}' ({layers_kind(layers)}): warm colours mark where the evidence for the genre "
        f"lies. For each genre, the {per_kind} test posters the model was surest belong to it and do (right), "
        "then those it was surest belong to it and do not (false positive) or, when there are too few, the "
        f"positives it missed by the widest margin.{_e(text)}</p>"
    )


def _genre_section(classifier, genres, column, index, examples, image_paths, y_true, threshold) -> str:
    figures = [_figure(classifier, index, example, image_paths, genres, y_true) for example in examples]
    if not figures:
        figures = ['<p class="note">No test poster was predicted as this genre or is one.</p>']
    return f'<h3>{_e(genres[column])} <span class="count">(threshold {threshold:.2f})</span></h3>\n' + "".join(figures)


def _figure(classifier, index: int, example: Example, image_paths, genres, y_true) -> str:
    from postergenre.data.images import open_rgb
    from postergenre.errors import PosterGenreError
    from postergenre.explain import render
    from postergenre.explain.gradcam import explain_image, text_read

    path = Path(image_paths[example.row])
    try:
        image = open_rgb(path)
    except PosterGenreError as error:
        logger.warning("explained examples: skipping %s", error)
        return f'<p class="note">{_e(error)}</p>'
    text_lines = text_read(classifier, classifier.read_poster_text(path))  # a text model's fixed text input
    cam = explain_image(classifier, image, [index]).cams[0]
    picture = render.fit_height(render.overlay(image, cam.heatmap), THUMBNAIL_HEIGHT)
    true_genres = [g for g, flag in zip(genres, y_true[example.row], strict=True) if flag] or ["none"]
    caption = (
        f"<b>{_e(example.kind)}</b> · {_e(path.name)}<br>score {example.score:.2f}"
        f"<br>true: {_e(', '.join(true_genres))}"
    )
    if text_lines is not None:
        picture = render.draw_text_boxes(picture, text_lines, image.size)
        caption += f'<br><span class="text-lines">{_e(render.text_caption(text_lines))}</span>'
    style = _FIGURE_STYLE.format(width=max(picture.width, 160))
    return (
        f'<figure style="{style}"><img alt="{_e(path.name)}" src="{render.to_data_uri(picture)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _check_inputs(image_paths, y_true, y_score, genres, model_genres) -> tuple[np.ndarray, np.ndarray]:
    from postergenre.errors import PosterGenreError

    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    expected = (len(image_paths), len(genres))
    if y_true.shape != expected or y_score.shape != expected:
        raise PosterGenreError(
            f"expected y_true and y_score of shape {expected} (posters, genres), got {y_true.shape} and {y_score.shape}"
        )
    unknown = [g for g in genres if g not in model_genres]
    if unknown:
        raise PosterGenreError(
            f"genres {', '.join(unknown)} are not the model's; expected some of {', '.join(model_genres)}"
        )
    return y_true, y_score


def _e(value) -> str:
    return html.escape(str(value), quote=True)
