"""Test-set figures for a multi-label genre model, always beside trivial baselines.

Pure functions on arrays: ``y_true`` is an (N, G) 0/1 array, ``y_score`` an (N, G) array of probabilities,
one column per genre. ROC AUC and average precision come from scikit-learn itself, so they equal
``roc_auc_score`` and ``average_precision_score`` exactly. A genre whose test positives (or negatives)
are too few for a stable AUC is shown but kept out of the macro and micro figures, with a warning.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from postergenre.errors import PosterGenreError
from postergenre.evaluation.baselines import top_genres, trivial_baselines

logger = logging.getLogger(__name__)

# The figures every model and every baseline report, in the order a reader sees them.
HEADLINE = (
    "macro_roc_auc",
    "macro_average_precision",
    "micro_roc_auc",
    "micro_average_precision",
    "macro_f1",
    "micro_f1",
    "macro_balanced_accuracy",
)
DEFAULT_MIN_POSITIVES = 10


def evaluate_scores(
    y_true,
    y_score,
    genres: list[str],
    thresholds: np.ndarray,
    *,
    train_prevalence: np.ndarray,
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> dict:
    """All test figures for one model as a JSON-able dict, with the trivial baselines under ``baselines``.

    Predictions are ``y_score >= thresholds`` per genre. ``train_prevalence`` (G,) is each genre's positive
    fraction in the training set; the baselines use it, never the test labels.
    """
    y_true, y_score = check_scores(y_true, y_score, genres)
    thresholds = _per_genre(thresholds, genres, "thresholds")
    train_prevalence = _per_genre(train_prevalence, genres, "train_prevalence")

    positives = y_true.sum(axis=0)
    negatives = len(y_true) - positives
    # Without a positive or a negative the AUC is undefined whatever min_positives says.
    flagged = np.minimum(positives, negatives) < max(min_positives, 1)
    in_macro = np.flatnonzero(~flagged)
    warnings = _reliability_warnings(genres, positives, negatives, min_positives)

    y_pred = y_score >= thresholds
    per_genre = _per_genre_rows(genres, y_true, y_score, y_pred, thresholds, train_prevalence, flagged)
    result = {
        **headline_figures(y_true, y_score, y_pred, in_macro, per_genre),
        "n_samples": len(y_true),
        "n_genres": len(genres),
        "min_positives": min_positives,
        "genres_in_macro": [genres[g] for g in in_macro],
        "genres_flagged": [genres[g] for g in np.flatnonzero(flagged)],
        "warnings": warnings,
        "per_genre": per_genre,
        "baselines": baseline_figures(y_true, genres, train_prevalence, in_macro),
    }
    for message in warnings:
        logger.warning(message)
    return result


def check_scores(y_true, y_score, genres: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as a 0/1 int array and ``y_score`` as floats, both (N, len(genres)); else a clear error."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    expected = (len(genres),)
    for name, array in (("y_true", y_true), ("y_score", y_score)):
        if array.ndim != 2 or array.shape[1:] != expected:
            raise PosterGenreError(
                f"{name} should be (n_samples, {len(genres)}) for {len(genres)} genres, got shape {array.shape}"
            )
    if y_true.shape != y_score.shape:
        raise PosterGenreError(f"y_true {y_true.shape} and y_score {y_score.shape} should have the same shape")
    if len(y_true) == 0:
        raise PosterGenreError("there are no test posters to evaluate on; check the split")
    if not np.isin(y_true, (0, 1)).all():
        raise PosterGenreError(f"y_true should hold only 0 and 1, got values {np.unique(y_true)[:5].tolist()}")
    if not np.isfinite(y_score).all():
        bad = np.argwhere(~np.isfinite(y_score))[0]
        raise PosterGenreError(
            f"y_score holds NaN or infinity (first at poster {bad[0]}, genre {genres[bad[1]]}); "
            "the model diverged or the features are broken"
        )
    return y_true.astype(np.int8), y_score


def roc_auc(y_true, y_score) -> float | None:
    """scikit-learn's ROC AUC for one genre, or None when the test set lacks positives or negatives."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).ravel()
    if _one_class(y_true):
        return None
    return float(roc_auc_score(y_true, np.asarray(y_score).ravel()))


def average_precision(y_true, y_score) -> float | None:
    """scikit-learn's average precision for one genre, or None when it is undefined (as ROC AUC)."""
    from sklearn.metrics import average_precision_score

    y_true = np.asarray(y_true).ravel()
    if _one_class(y_true):
        return None
    return float(average_precision_score(y_true, np.asarray(y_score).ravel()))


def threshold_figures(y_true, y_pred) -> dict:
    """F1, precision, recall and balanced accuracy of yes/no predictions for one genre (or raveled genres).

    F1, precision and recall are 0 where their denominator is 0 (scikit-learn's ``zero_division=0``).
    Balanced accuracy is the mean of the recalls of the classes present, as scikit-learn computes it.
    """
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_pred = np.asarray(y_pred).ravel().astype(bool)
    tp = int(np.sum(y_true & y_pred))
    fp = int(np.sum(~y_true & y_pred))
    fn = int(np.sum(y_true & ~y_pred))
    tn = int(np.sum(~y_true & ~y_pred))
    recalls = [tp / (tp + fn)] if tp + fn else []
    recalls += [tn / (tn + fp)] if tn + fp else []
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "balanced_accuracy": float(np.mean(recalls)),
    }


def per_genre_figures(y_true, y_score, y_pred) -> list[dict]:
    """Per genre: ROC AUC and AP (None where undefined), and the yes/no figures of ``y_pred``.

    One scikit-learn call covers every genre (``average=None``): the same per-column computation as a
    call per genre, without paying its input checks once per genre and baseline.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    positives = y_true.sum(axis=0)
    defined = np.flatnonzero((positives > 0) & (positives < len(y_true)))
    aucs, aps = [None] * y_true.shape[1], [None] * y_true.shape[1]
    if len(defined):
        columns = (y_true[:, defined], y_score[:, defined])
        auc_values = np.atleast_1d(roc_auc_score(*columns, average=None))
        ap_values = np.atleast_1d(average_precision_score(*columns, average=None))
        for g, auc, ap in zip(defined, auc_values, ap_values, strict=True):
            aucs[g], aps[g] = float(auc), float(ap)
    return [
        {"roc_auc": aucs[g], "average_precision": aps[g], **threshold_figures(y_true[:, g], y_pred[:, g])}
        for g in range(y_true.shape[1])
    ]


def headline_figures(y_true, y_score, y_pred, in_macro, per_genre: list[dict]) -> dict:
    """Macro figures (mean over the genres in ``in_macro``) and micro figures (those genres pooled)."""
    in_macro = np.asarray(in_macro, dtype=int)
    if len(in_macro) == 0:
        return dict.fromkeys(HEADLINE)
    rows = [per_genre[g] for g in in_macro]
    pooled = threshold_figures(y_true[:, in_macro], y_pred[:, in_macro])
    return {
        "macro_roc_auc": _mean(r["roc_auc"] for r in rows),
        "macro_average_precision": _mean(r["average_precision"] for r in rows),
        "micro_roc_auc": roc_auc(y_true[:, in_macro], y_score[:, in_macro]),
        "micro_average_precision": average_precision(y_true[:, in_macro], y_score[:, in_macro]),
        "macro_f1": _mean(r["f1"] for r in rows),
        "micro_f1": pooled["f1"],
        "macro_balanced_accuracy": _mean(r["balanced_accuracy"] for r in rows),
    }


def baseline_figures(y_true, genres: list[str], train_prevalence, in_macro) -> dict:
    """The headline figures of each trivial baseline on the same test posters and genres."""
    result = {}
    for baseline in trivial_baselines(train_prevalence, len(y_true)):
        y_score, y_pred = baseline.y_score, baseline.y_pred
        per_genre = per_genre_figures(y_true, y_score, y_pred)
        figures = headline_figures(y_true, y_score, y_pred, in_macro, per_genre)
        result[baseline.name] = {"description": baseline.description, **figures}
    result["top3"]["genres"] = [genres[g] for g in top_genres(train_prevalence)]
    return result


def _per_genre_rows(genres, y_true, y_score, y_pred, thresholds, train_prevalence, flagged) -> list[dict]:
    positives = y_true.sum(axis=0)
    figures = per_genre_figures(y_true, y_score, y_pred)
    return [
        {
            "genre": genre,
            "positives": int(positives[g]),
            "prevalence": float(positives[g] / len(y_true)),
            "train_prevalence": float(train_prevalence[g]),
            **figures[g],
            "threshold": float(thresholds[g]),
            "flagged": bool(flagged[g]),
        }
        for g, genre in enumerate(genres)
    ]


def _reliability_warnings(genres, positives, negatives, min_positives) -> list[str]:
    warnings = []
    for genre, pos, neg in zip(genres, positives, negatives, strict=True):
        if pos == 0 or neg == 0:
            missing = "positives" if pos == 0 else "negatives"
            warnings.append(
                f"{genre}: no test {missing}, so its AUC and AP are undefined (shown as n/a) and it is left out "
                "of the macro figures; use a split that puts the genre on both sides or drop the genre"
            )
        elif min(pos, neg) < min_positives:
            kind, count = ("positives", pos) if pos < min_positives else ("negatives", neg)
            warnings.append(
                f"{genre}: {count} test {kind}, fewer than {min_positives}; its AUC is unreliable and is left out "
                "of the macro figures (a larger test set, or a lower min_positives if you accept the noise)"
            )
    if len(warnings) == len(genres):
        warnings.append(
            f"no genre has {min_positives} or more test positives and negatives, so there are no macro or micro "
            "figures; evaluate on a larger test set or lower min_positives"
        )
    return warnings


def _per_genre(values, genres: list[str], name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(genres),):
        raise PosterGenreError(f"{name} should hold one value per genre ({len(genres)}), got shape {values.shape}")
    return values


def _one_class(y_true: np.ndarray) -> bool:
    return y_true.min() == y_true.max()


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def _mean(values) -> float | None:
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(defined)) if defined else None
