"""The saved heads trained once more, on train and validation together.

Early stopping needs posters the head does not learn from: the validation split, a fifth of the
posters outside the test set. Once it has chosen each head's epoch count, and the genre
thresholds and the late-fusion weight have been tuned on the validation predictions, each saved
head is trained again from the same initial weights on train + validation for that many epochs,
and that head is the one saved.

Measured on the shared dataset (standard split, lite0 image features with pooled stages, poster
text, late fusion; the same thresholds and weight): test macro ROC-AUC 0.795 -> 0.798 and
average precision 0.340 -> 0.352; the image head alone 0.757 -> 0.762. Training the heads for a
quarter more epochs than chosen measured the same (0.798 / 0.353).

What stays from the first fit: the validation predictions (``validation_predictions.csv``), the
thresholds and fusion weight tuned on them, and ``history.csv``; all honest, since that head had not
seen the validation posters. The refit head itself has seen them, so its validation figures would
flatter: nothing reports them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial

import numpy as np

from postergenre.training.loop import TrainResult, train_concurrently

logger = logging.getLogger(__name__)


def refit_candidate(config, spans: list[tuple[int, int]] | None, name: str, result: TrainResult, sides: dict):
    """The refit head of one candidate (``"image"``, ``"text"`` or ``"concat"``); ``spans``: an
    ensemble's column span per backbone, which only the image features have."""
    return refit_head(config, sides, result, spans if name == "image" else None)


def fit_then_refit(name: str, train, sides: dict, refit=None):
    """A job for a :class:`~postergenre.training.loop.HeadPool`: ``train()``, then, when ``refit`` is
    given, ``refit(name, result, sides)``; returns ``(result, (refit head, seconds) or None)``.

    A refit needs only its own head's epoch count, so it may start before the fusion is chosen; a
    candidate that is not chosen has its refit thrown away (the image head, which every choice but
    concat keeps, is the one whose refit is worth starting early).
    """

    def job():
        result = train()
        if refit is None:
            return result, None
        started = time.perf_counter()
        head = refit(name, result, sides)
        return result, (head, time.perf_counter() - started)

    return job


def refit_choice(choice, config, spans: list[tuple[int, int]] | None = None) -> dict:
    """Train each saved head of ``choice`` (a :class:`~postergenre.training.fusion.TextChoice`) again on
    train + validation, side by side, and put the new heads in its place; heads in ``choice.refits``
    were refit already, beside the first fits.

    ``spans``: an ensemble's column span per backbone, in the image features. Returns what
    ``model.json`` records: the epochs of each head (each backbone's, for an ensemble) and the
    posters they trained on.
    """
    ready = choice.refits
    jobs = {
        name: partial(refit_candidate, config, spans, name, result, sides)
        for name, (result, sides) in choice.saved.items()
        if name not in ready
    }
    started = time.perf_counter()
    heads = train_concurrently(jobs)
    seconds = [time.perf_counter() - started] if jobs else []
    for name, (head, took) in ready.items():
        heads[name] = head
        seconds.append(took)
    for name, (result, _) in choice.saved.items():
        result.head = heads[name]
        if name == "text":
            choice.text_head = heads[name]
    n_posters = {
        name: len(sides["train"][0]) + len(sides["validation"][0]) for name, (_, sides) in choice.saved.items()
    }
    info = {
        "epochs": {name: refit_epochs(result, config) for name, (result, _) in choice.saved.items()},
        "posters": max(n_posters.values()),
        "seconds": round(max(seconds), 2),  # the longest refit: they ran side by side
    }
    logger.info(
        "refit on train + validation (%d posters): %s, in %.1f s",
        info["posters"],
        ", ".join(f"{name} head {_epochs_text(epochs)}" for name, epochs in info["epochs"].items()),
        info["seconds"],
    )
    return info


def _epochs_text(epochs: int | dict[str, int]) -> str:
    """``"23 epochs"``, or an ensemble's ``"20 epochs (efficientnet_lite0), 28 (mobilenet_v2)"``."""
    if isinstance(epochs, int):
        return f"{epochs} epochs"
    first, *others = (f"{count} ({member})" for member, count in epochs.items())
    return ", ".join([first.replace(" (", " epochs (", 1), *others])


def refit_epochs(result: TrainResult, config) -> int | dict[str, int]:
    """The epochs a refit trains: the best validation epoch, or each ensemble backbone's."""
    if result.members:
        return {member: result.members[member].best_epoch for member in config.members}
    return result.best_epoch


def refit_head(config, sides: dict, result: TrainResult, spans: list[tuple[int, int]] | None = None):
    """A new head like ``result``'s, trained on ``sides``' train and validation rows for its best epochs."""
    from postergenre.training.heads import EnsembleHead
    from postergenre.training.multilabel import train_multilabel
    from postergenre.training.per_genre import train_per_genre

    trainer = train_per_genre if config.mode == "per-genre" else train_multilabel
    x = np.vstack([sides["train"][1], sides["validation"][1]])
    y = np.vstack([sides["train"][2], sides["validation"][2]])
    epochs = refit_epochs(result, config)
    if not spans:
        return trainer((x, y), None, dataclasses.replace(config, epochs=epochs)).head
    jobs = {
        member: partial(trainer, (x[:, start:stop], y), None, dataclasses.replace(config, epochs=epochs[member]))
        for member, (start, stop) in zip(config.members, spans, strict=True)
    }
    results = train_concurrently(jobs)
    return EnsembleHead([results[member].head for member in config.members], spans)
