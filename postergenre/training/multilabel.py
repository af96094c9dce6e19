"""Multi-label training: one head over all selected genres at once, on every training poster.

Each poster's label vector is one target; the head learns shared structure (an MLP's hidden
layer) between genres. The probabilities reflect the genres' real prevalence, since every
poster is seen as it is.
"""

from __future__ import annotations

import numpy as np

from postergenre.training.heads import create_head
from postergenre.training.loop import TrainResult, fit, log_odds, seeded, settings_from, train_prevalence
from postergenre.training.losses import create_loss


def train_multilabel(
    train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray], config
) -> TrainResult:
    """Train a multi-label head on (features, labels) pairs; ``config`` is a ``TrainConfig``."""
    x_train, y_train = train
    with seeded(config.seed):
        head = create_head(
            config.head_type, x_train.shape[1], y_train.shape[1], hidden=config.hidden_size, dropout=config.dropout_rate
        )
    head.set_standardisation(x_train)
    head.init_output_bias(log_odds(train_prevalence(y_train)))
    loss_fn = create_loss(config.loss, gamma_neg=config.gamma_neg, gamma_pos=config.gamma_pos, clip=config.clip)
    # Balanced accuracy per epoch says yes above each genre's prior, the cut a calibrated model
    # would use to treat both classes alike.
    cut = log_odds(train_prevalence(y_train))
    return fit(head, loss_fn, train, validation, settings_from(config), decision_cut=cut)
