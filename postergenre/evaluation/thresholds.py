"""Per-genre decision thresholds, tuned on the validation set.

A genre is predicted when its probability is at least the genre's threshold (``y_score >= threshold``).
A fixed 0.5 says "no" to nearly every rare genre, because a model trained on rare positives seldom gives
them half the probability mass; tuning one threshold per genre for F1 fixes that without retraining.
"""

from __future__ import annotations

import logging

import numpy as np

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def tune_thresholds(y_true: np.ndarray, y_score: np.ndarray, *, default: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(G,) thresholds, each maximising the genre's F1 on these (validation) labels and scores.

    A genre with no validation positives cannot be tuned: it keeps ``default``, with a warning.
    """
    y_true, y_score = _check(y_true, y_score)
    thresholds = np.full(y_true.shape[1], float(default))
    untuned = []
    for g in range(y_true.shape[1]):
        if y_true[:, g].any():
            thresholds[g], _ = best_f1_threshold(y_true[:, g], y_score[:, g])
        else:
            untuned.append(g)
    if untuned:
        logger.warning(
            "%d genre(s) (columns %s) have no validation positives; they keep the threshold %.2f. "
            "A split with positives of every genre in validation fixes this",
            len(untuned),
            untuned,
            default,
        )
    return thresholds


def best_f1_threshold(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the best cut of one genre's scores; ``y_true`` must hold a positive.

    Every distinct score is a candidate cut, found in one sorted pass. The threshold returned lies halfway
    between the lowest score predicted yes and the highest score predicted no, so that test scores close to
    the cut are not decided by which side of a validation score they fall on.
    """
    order = np.argsort(-y_score, kind="stable")
    scores, labels = y_score[order], y_true[order].astype(bool)
    # The last position of each run of equal scores: a cut there keeps ties together.
    ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    tp = np.cumsum(labels)[ends]
    predicted = ends + 1
    f1 = 2 * tp / (predicted + labels.sum())
    best = int(np.argmax(f1))
    cut = ends[best]
    threshold = scores[cut]
    if cut + 1 < len(scores):
        midpoint = (scores[cut] + scores[cut + 1]) / 2
        # Two neighbouring floats can round their midpoint onto the lower one, which would move the cut.
        threshold = midpoint if midpoint > scores[cut + 1] else scores[cut]
    return float(threshold), float(f1[best])


def apply_thresholds(y_score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Yes/no predictions (N, G) as booleans: ``y_score >= thresholds``, one threshold per genre."""
    return np.asarray(y_score) >= np.asarray(thresholds)


def _check(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise PosterGenreError(
            f"y_true and y_score should both be (n_samples, n_genres), got {y_true.shape} and {y_score.shape}"
        )
    if not np.isfinite(y_score).all():
        raise PosterGenreError("validation scores hold NaN or infinity; the model diverged or the features are broken")
    return y_true, y_score
