"""Trivial baselines: predictions that know each genre's training prevalence and nothing about the poster.

A model's figure means something only beside these. Macro AUC 0.5 and AP equal to the test prevalence are
what a constant score gets; F1 and micro figures reward guessing common genres, which the "always yes" and
"top 3" baselines do without looking at a single poster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The real dataset lists at most three genres per poster (2.3 on average; Drama 50%, Comedy 40%, Action 19%
# of posters), so "the three most common genres" is the natural blind guess.
TOP_K = 3


@dataclass(frozen=True)
class Baseline:
    """One trivial predictor on N posters: its scores (N, G) and yes/no predictions (N, G)."""

    name: str
    description: str
    y_score: np.ndarray
    y_pred: np.ndarray


def train_prevalence(y_train) -> np.ndarray:
    """(G,) fraction of training posters that have each genre."""
    return np.asarray(y_train, dtype=np.float64).mean(axis=0)


def top_genres(prevalence, k: int = TOP_K) -> np.ndarray:
    """Indices of the ``k`` most frequent genres (the first in column order on a tie)."""
    prevalence = np.asarray(prevalence, dtype=np.float64)
    return np.argsort(-prevalence, kind="stable")[: min(k, len(prevalence))]


def trivial_baselines(prevalence, n_samples: int) -> list[Baseline]:
    """The baselines for ``n_samples`` test posters, built from training prevalence alone."""
    prevalence = np.asarray(prevalence, dtype=np.float64)
    shape = (n_samples, len(prevalence))
    top = np.zeros(len(prevalence), dtype=bool)
    top[top_genres(prevalence)] = True
    prevalence_scores = np.broadcast_to(prevalence, shape)
    return [
        # A constant score per genre ranks nothing: AUC 0.5 and AP equal to the test prevalence. Its yes/no
        # answer (prevalence >= 0.5) is "no" for every genre rarer than a coin toss.
        Baseline(
            "prevalence",
            "every poster scored with each genre's training prevalence",
            prevalence_scores,
            prevalence_scores >= 0.5,
        ),
        Baseline("always_no", "no genre for any poster", np.zeros(shape), np.zeros(shape, dtype=bool)),
        # F1 rewards saying yes to a common genre; a model's F1 means little unless it beats this.
        Baseline("always_yes", "every genre for every poster", np.ones(shape), np.ones(shape, dtype=bool)),
        Baseline(
            "top3",
            f"the {TOP_K} most frequent training genres for every poster",
            np.broadcast_to(top, shape).astype(float),
            np.broadcast_to(top, shape),
        ),
    ]
