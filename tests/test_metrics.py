"""Metrics, baselines and thresholds, checked against scikit-learn and against cases with known answers."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from postergenre.errors import PosterGenreError
from postergenre.evaluation.baselines import top_genres, train_prevalence, trivial_baselines
from postergenre.evaluation.metrics import HEADLINE, evaluate_scores, threshold_figures
from postergenre.evaluation.thresholds import apply_thresholds, best_f1_threshold, tune_thresholds

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]  # seven: an odd count


def noisy_scores(n: int = 300, n_genres: int = len(GENRES), seed: int = 0, signal: float = 1.0):
    """Labels with prevalence from 10% to 50% and scores that carry some signal about them."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.1, 0.5, n_genres)
    y_true = (rng.random((n, n_genres)) < prevalence).astype(int)
    logits = rng.normal(size=(n, n_genres)) + signal * (2 * y_true - 1)
    return y_true, 1 / (1 + np.exp(-logits)), prevalence


def evaluate(y_true, y_score, thresholds=0.5, prevalence=None, **kwargs):
    n_genres = y_true.shape[1]
    prevalence = y_true.mean(axis=0) if prevalence is None else prevalence
    return evaluate_scores(
        y_true, y_score, GENRES[:n_genres], np.full(n_genres, thresholds), train_prevalence=prevalence, **kwargs
    )


def test_auc_and_ap_equal_scikit_learn():
    """Check per-genre, macro and micro AUC and AP against roc_auc_score and average_precision_score."""
    y_true, y_score, _ = noisy_scores()
    metrics = evaluate(y_true, y_score)

    for g, row in enumerate(metrics["per_genre"]):
        assert row["roc_auc"] == roc_auc_score(y_true[:, g], y_score[:, g])
        assert row["average_precision"] == average_precision_score(y_true[:, g], y_score[:, g])
    assert metrics["macro_roc_auc"] == pytest.approx(roc_auc_score(y_true, y_score, average="macro"), abs=1e-12)
    assert metrics["micro_roc_auc"] == roc_auc_score(y_true, y_score, average="micro")
    assert metrics["macro_average_precision"] == pytest.approx(
        average_precision_score(y_true, y_score, average="macro"), abs=1e-12
    )
    assert metrics["micro_average_precision"] == average_precision_score(y_true, y_score, average="micro")


def test_threshold_figures_equal_scikit_learn():
    """Check F1, precision, recall, balanced accuracy and the micro F1 against scikit-learn at the thresholds."""
    y_true, y_score, _ = noisy_scores(seed=1)
    thresholds = np.linspace(0.3, 0.6, len(GENRES))
    metrics = evaluate_scores(y_true, y_score, GENRES, thresholds, train_prevalence=y_true.mean(axis=0))
    y_pred = y_score >= thresholds

    for g, row in enumerate(metrics["per_genre"]):
        assert row["f1"] == pytest.approx(f1_score(y_true[:, g], y_pred[:, g]))
        assert row["precision"] == pytest.approx(precision_score(y_true[:, g], y_pred[:, g]))
        assert row["recall"] == pytest.approx(recall_score(y_true[:, g], y_pred[:, g]))
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true[:, g], y_pred[:, g]))
        assert row["threshold"] == thresholds[g]
    assert metrics["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_perfect_scorer_gets_one():
    """Check that scores equal to the labels give 1.0 on every headline figure."""
    y_true, _, _ = noisy_scores()
    metrics = evaluate(y_true, y_true.astype(float))

    for key in HEADLINE:
        assert metrics[key] == 1.0, key


def test_baselines_are_trivial():
    """Check prevalence AUC 0.5 and AP = test prevalence, always-no F1 0, always-yes F1 2p/(1+p), top-3 genres."""
    y_true, y_score, prevalence = noisy_scores()
    metrics = evaluate(y_true, y_score, prevalence=prevalence)
    baselines = metrics["baselines"]
    test_prevalence = y_true.mean(axis=0)

    assert baselines["prevalence"]["macro_roc_auc"] == 0.5
    assert baselines["prevalence"]["macro_average_precision"] == pytest.approx(test_prevalence.mean())
    assert [row["prevalence"] for row in metrics["per_genre"]] == pytest.approx(test_prevalence)
    assert baselines["always_no"]["macro_f1"] == 0.0
    assert baselines["always_no"]["micro_f1"] == 0.0
    assert baselines["always_no"]["macro_balanced_accuracy"] == 0.5
    assert baselines["always_yes"]["macro_f1"] == pytest.approx(np.mean(2 * test_prevalence / (1 + test_prevalence)))
    assert baselines["top3"]["genres"] == ["Western", "Sci-Fi", "Romance"]
    # The model has signal, so it must beat every baseline on macro AUC.
    assert metrics["macro_roc_auc"] > max(b["macro_roc_auc"] for b in baselines.values())


def test_prevalence_baseline_inflates_micro_auc():
    """Check that the prevalence baseline's micro AUC exceeds 0.5: pooling genres rewards knowing which are common."""
    y_true, y_score, prevalence = noisy_scores(n=2000)
    metrics = evaluate(y_true, y_score, prevalence=prevalence)

    assert metrics["baselines"]["prevalence"]["micro_roc_auc"] > 0.6


def test_trivial_baselines_shapes_and_top_genres():
    """Check each baseline gives (N, G) scores and predictions, and top_genres breaks ties by column order."""
    baselines = trivial_baselines([0.2, 0.5, 0.5, 0.1, 0.3, 0.05, 0.01], n_samples=11)

    assert [b.name for b in baselines] == ["prevalence", "always_no", "always_yes", "top3"]
    for baseline in baselines:
        assert baseline.y_score.shape == baseline.y_pred.shape == (11, 7)
    assert top_genres([0.2, 0.5, 0.5, 0.1, 0.3]).tolist() == [1, 2, 4]
    assert train_prevalence([[1, 0], [1, 1], [0, 0], [1, 0]]).tolist() == [0.75, 0.25]


def test_genre_without_test_positives_is_null_flagged_and_left_out():
    """Check a genre with no test positives: AUC/AP None, flagged, warned about, and not in the macro figures."""
    y_true, y_score, _ = noisy_scores()
    y_true[:, 3] = 0
    metrics = evaluate(y_true, y_score, prevalence=np.full(len(GENRES), 0.2))
    horror = metrics["per_genre"][3]
    kept = [g for g in range(len(GENRES)) if g != 3]

    assert horror["roc_auc"] is None and horror["average_precision"] is None
    assert horror["flagged"] and horror["positives"] == 0
    assert "Horror" in metrics["genres_flagged"] and "Horror" not in metrics["genres_in_macro"]
    assert any(w.startswith("Horror: no test positives") for w in metrics["warnings"])
    assert metrics["macro_roc_auc"] == pytest.approx(
        np.mean([roc_auc_score(y_true[:, g], y_score[:, g]) for g in kept])
    )
    assert metrics["micro_roc_auc"] == roc_auc_score(y_true[:, kept].ravel(), y_score[:, kept].ravel())
    json.dumps(metrics, allow_nan=False)


def test_genre_without_test_negatives_is_flagged():
    """Check a genre that every test poster has: AUC undefined, flagged, warned about 'no test negatives'."""
    y_true, y_score, _ = noisy_scores()
    y_true[:, 0] = 1
    metrics = evaluate(y_true, y_score)

    assert metrics["per_genre"][0]["roc_auc"] is None
    assert any(w.startswith("Action: no test negatives") for w in metrics["warnings"])


@pytest.mark.parametrize(("min_positives", "flagged"), [(10, True), (5, False)])
def test_min_positives_flag(min_positives, flagged):
    """Check a genre with 5 test positives is flagged (and warned about) only when min_positives exceeds 5."""
    y_true, y_score, _ = noisy_scores()
    y_true[:, 6] = 0
    y_true[:5, 6] = 1
    metrics = evaluate(y_true, y_score, min_positives=min_positives)

    assert metrics["per_genre"][6]["flagged"] is flagged
    assert ("Western" in metrics["genres_in_macro"]) is not flagged
    assert metrics["per_genre"][6]["roc_auc"] is not None  # shown even when flagged
    expected = "Western: 5 test positives, fewer than 10; its AUC is unreliable and is left out of the macro figures"
    assert any(w.startswith(expected) for w in metrics["warnings"]) is flagged


def test_no_reliable_genre_gives_null_macro_and_a_warning():
    """Check that when every genre is flagged the macro and micro figures are None, with a warning, not a crash."""
    y_true, y_score, _ = noisy_scores(n=30)
    metrics = evaluate(y_true, y_score, min_positives=100)

    assert all(metrics[key] is None for key in HEADLINE)
    assert metrics["genres_in_macro"] == []
    assert any("no genre has 100 or more" in w for w in metrics["warnings"])
    assert metrics["baselines"]["prevalence"]["macro_roc_auc"] is None
    json.dumps(metrics, allow_nan=False)


def test_warnings_are_logged(caplog):
    """Check that each reliability warning also goes to the log."""
    y_true, y_score, _ = noisy_scores()
    y_true[:, 2] = 0
    with caplog.at_level(logging.WARNING, logger="postergenre.evaluation.metrics"):
        evaluate(y_true, y_score)

    assert "Drama: no test positives" in caplog.text


def test_single_genre():
    """Check that one genre works (no hard-coded widths)."""
    y_true, y_score, _ = noisy_scores(n_genres=1)
    metrics = evaluate(y_true, y_score)

    assert metrics["macro_roc_auc"] == metrics["micro_roc_auc"] == roc_auc_score(y_true[:, 0], y_score[:, 0])
    assert metrics["baselines"]["top3"]["genres"] == ["Action"]


@pytest.mark.parametrize(
    ("y_score", "match"),
    [
        (np.zeros((10, 6)), r"y_score should be \(n_samples, 7\)"),
        (np.zeros((9, 7)), "should have the same shape"),
        (np.full((10, 7), np.nan), "NaN or infinity .* genre Action"),
    ],
)
def test_bad_scores_raise(y_score, match):
    """Check that wrong shapes and NaN scores raise a PosterGenreError that says what is wrong."""
    y_true = np.zeros((10, 7), dtype=int)
    with pytest.raises(PosterGenreError, match=match):
        evaluate_scores(y_true, y_score, GENRES, np.full(7, 0.5), train_prevalence=np.full(7, 0.1))


def test_bad_thresholds_raise():
    """Check that thresholds of the wrong length raise an error naming them."""
    y_true, y_score, _ = noisy_scores()
    with pytest.raises(PosterGenreError, match="thresholds should hold one value per genre"):
        evaluate_scores(y_true, y_score, GENRES, np.full(3, 0.5), train_prevalence=np.full(7, 0.1))


def test_threshold_figures_without_positives():
    """Check F1/precision/recall are 0 and balanced accuracy is the negatives' recall when nothing is positive."""
    figures = threshold_figures([0, 0, 0, 0], [0, 1, 0, 0])

    assert figures == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "balanced_accuracy": 0.75}


def test_tuned_thresholds_beat_or_match_one_half():
    """Check that on validation data every tuned threshold's F1 is at least the F1 at 0.5."""
    y_true, y_score, _ = noisy_scores(seed=3, signal=0.7)
    thresholds = tune_thresholds(y_true, y_score)
    tuned, fixed = apply_thresholds(y_score, thresholds), y_score >= 0.5

    assert thresholds.shape == (len(GENRES),)
    for g in range(len(GENRES)):
        assert f1_score(y_true[:, g], tuned[:, g]) >= f1_score(y_true[:, g], fixed[:, g])
    assert f1_score(y_true, tuned, average="macro") > f1_score(y_true, fixed, average="macro")


def test_tuned_threshold_finds_the_known_cut():
    """Check on constructed scores that the threshold falls halfway between the best cut's two scores."""
    y_true = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 1], [0, 0]])
    y_score = np.array([[0.45, 0.9], [0.40, 0.8], [0.35, 0.7], [0.20, 0.6], [0.10, 0.3], [0.05, 0.2]])
    thresholds = tune_thresholds(y_true, y_score)

    # Genre 0: yes for the three positives (F1 1.0), below 0.5 where a fixed threshold says no to all.
    assert thresholds[0] == pytest.approx(0.275)
    # Genre 1: taking 0.3 in (5 yes, 3 right) gives F1 0.75 > 0.667 at the cut after 0.7.
    assert thresholds[1] == pytest.approx(0.25)
    assert best_f1_threshold(y_true[:, 1], y_score[:, 1])[1] == pytest.approx(0.75)


def test_tuned_threshold_keeps_ties_together():
    """Check that equal scores land on the same side of the threshold."""
    y_true = np.array([1, 0, 1, 0, 0])
    y_score = np.array([0.8, 0.8, 0.8, 0.2, 0.1])
    threshold, f1 = best_f1_threshold(y_true, y_score)

    assert threshold == pytest.approx(0.5)
    assert f1 == pytest.approx(0.8)


def test_genre_without_validation_positives_keeps_the_default(caplog):
    """Check that an untunable genre keeps 0.5 and the log says so."""
    y_true, y_score, _ = noisy_scores()
    y_true[:, 4] = 0
    with caplog.at_level(logging.WARNING, logger="postergenre.evaluation.thresholds"):
        thresholds = tune_thresholds(y_true, y_score)

    assert thresholds[4] == 0.5
    assert "no validation positives" in caplog.text


def test_tune_thresholds_rejects_bad_shapes():
    """Check that mismatched label and score arrays raise an error that shows both shapes."""
    with pytest.raises(PosterGenreError, match=r"got \(4, 7\) and \(4, 6\)"):
        tune_thresholds(np.zeros((4, 7)), np.zeros((4, 6)))
