"""The user's names turned into objects: a run folder or backbone name, genre names, an output path.

Shared by ``postergenre explain`` and ``postergenre filters``; every refusal is a
:class:`PosterGenreError` that lists the valid choices, so the CLI prints it on one line.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)


@dataclass
class Subject:
    """What ``filters`` looks into: a backbone, and the whole classifier when a run folder was given."""

    backbone: object  # postergenre.models.backbones.Backbone
    preprocessing: object  # postergenre.models.preprocessing.Preprocessing
    classifier: object | None = None  # postergenre.explain.classifier.GenreClassifier
    label: str = ""


def prefer_passive_threads() -> None:
    """Let idle OpenMP workers sleep instead of spinning; call before torch is imported.

    On a 2-core machine shared with other work, one EfficientNet-Lite0 forward at 224 took 4.7 s
    with spinning workers and 0.1 s with sleeping ones; on an idle machine the two are alike. A
    value the user set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def freeze_imported_objects() -> None:
    """Hide everything imported so far (torch's many objects) from the garbage collector, for good.

    A short command pays for torch's objects in every full collection and again when the
    interpreter shuts down: freezing them cut a bare ``import torch`` process from 4.6 s to 3.1 s
    on the 2-core machine. They live as long as the process anyway.
    """
    gc.freeze()


def load_run(run: str | Path):
    """The :class:`GenreClassifier` of a run folder; a missing folder or loader is a one-line error."""
    from postergenre.explain import classifier as classifiers

    run = Path(run)
    if not run.is_dir():
        raise PosterGenreError(f"{run}: run folder not found; pass the --out folder of postergenre train")
    try:
        return classifiers.load_classifier(run)
    except NotImplementedError as error:
        raise PosterGenreError(f"{run}: cannot load the run: {error}") from error


def load_subject(name: str, weights: str | None = None) -> Subject:
    """A run folder (backbone, head, genres) or a registered backbone name (the backbone alone)."""
    from postergenre.models.backbones import create_backbone, get_spec, list_backbones

    if Path(name).is_dir():
        classifier = load_run(name)
        if classifier.is_ensemble:
            # Filters, maps and activation maximisation look into one network at a time.
            first = classifier.backbone.members[0]
            logger.info("%s is an ensemble; showing its first backbone, %s", classifier.name, first.name)
            label = f"{first.name} (first backbone of {classifier.name}; its genres need the whole ensemble)"
            return Subject(first, classifier.backbone.preprocessing[0], None, label=label)
        return Subject(classifier.backbone, classifier.preprocessing, classifier, label=classifier.name)
    if name not in list_backbones():
        raise PosterGenreError(
            f"{name}: neither a run folder nor a backbone name; pass a run folder (postergenre train --out) "
            f"or one of {', '.join(list_backbones())}"
        )
    if get_spec(name).weights == "none" and weights is None:
        logger.warning("%s has no pretrained weights: its filters and maps are random; pass a run folder", name)
    backbone = create_backbone(name, weights=weights).eval()
    return Subject(backbone, backbone.preprocessing, None, label=name)


def genre_indices(genres: list[str], names: list[str]) -> list[int]:
    """Positions of the named genres (case-insensitive); an unknown name lists the model's genres."""
    by_name = {g.casefold(): k for k, g in enumerate(genres)}
    indices = []
    for name in names:
        if name.casefold() not in by_name:
            raise PosterGenreError(f"unknown genre {name!r}; this model's genres are {', '.join(genres)}")
        indices.append(by_name[name.casefold()])
    return list(dict.fromkeys(indices))


def open_poster(path: str | Path):
    """The poster as RGB; an unreadable file is a one-line error naming it."""
    from postergenre.data.images import open_rgb

    return open_rgb(Path(path))


def default_out(*parts: str) -> Path:
    """``part1_part2...png`` in the current folder, with characters unsafe in file names replaced."""
    stem = "_".join(parts)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
    return Path.cwd() / f"{safe}.png"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_out(path: Path) -> Path:
    """Fail before the work, not after it, when the output file cannot be written there."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise PosterGenreError(f"{path}: unknown picture type; name a file ending in {', '.join(IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise PosterGenreError(f"{path}: is a folder; pass --out FILE.png naming a file")
    if not path.parent.is_dir():
        raise PosterGenreError(f"{path.parent}: folder not found; create it or pass another --out")
    return path
