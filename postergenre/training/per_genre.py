"""Per-genre training: one balanced yes/no model per genre, the original work's method.

For each genre the model sees all of its training positives and an equal number of negatives
drawn at random (undersampling), redrawn every epoch so that over the epochs it meets most
negatives. All genres train at once: one (D -> G) layer (or one small MLP per genre) whose loss
counts, for genre g, only genre g's sample, so no genre's model depends on another's.

A model trained at 50/50 overstates rare genres. By Bayes' rule its log-odds are the
likelihood ratio's, so adding the genre's true prior log-odds, log(pi / (1 - pi)) with pi the
genre's training prevalence, gives probabilities calibrated to the real prior. The head stores
this correction as its ``logit_offset``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from postergenre.training.heads import create_head
from postergenre.training.loop import TrainResult, fit, log_odds, seeded, settings_from, train_prevalence
from postergenre.training.losses import create_loss

logger = logging.getLogger(__name__)


def balanced_sample_mask(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, G) booleans: per genre, all positives and as many negatives drawn without replacement.

    A genre with more positives than negatives keeps all its negatives. Vectorised: every
    negative gets a random key, and a genre keeps its negatives whose key ranks below its count
    of positives.
    """
    y = np.asarray(y).astype(bool)
    keys = rng.random(y.shape)
    keys[y] = np.inf
    ranks = np.argsort(np.argsort(keys, axis=0, kind="stable"), axis=0, kind="stable")
    return y | (ranks < y.sum(0))


def prior_correction(y_train: np.ndarray) -> np.ndarray:
    """Per-genre logit offset that moves a balanced model to each genre's training prior."""
    return log_odds(train_prevalence(y_train)).astype(np.float32)


def train_per_genre(
    train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray], config
) -> TrainResult:
    """Train balanced per-genre models on (features, labels) pairs; ``config`` is a ``TrainConfig``.

    The returned head's probabilities are corrected to each genre's training prevalence.
    """
    x_train, y_train = train
    with seeded(config.seed):
        head = create_head(
            config.head_type, x_train.shape[1], y_train.shape[1], hidden=config.hidden_size, dropout=config.dropout_rate
        )
    head.set_standardisation(x_train)
    loss_fn = create_loss(config.loss, gamma_neg=config.gamma_neg, gamma_pos=config.gamma_pos, clip=config.clip)
    # Trained at 50/50, logit 0 is each genre's balanced cut.
    result = fit(
        head,
        loss_fn,
        train,
        validation,
        settings_from(config),
        sample_mask=lambda rng: balanced_sample_mask(y_train, rng),
    )
    result.head.logit_offset.copy_(torch.from_numpy(prior_correction(y_train)))
    return result
