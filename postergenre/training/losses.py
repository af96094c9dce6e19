"""Multi-label losses on logits, element-wise so that a mask can choose what counts.

Both losses return a per-element loss of shape (N, G); :func:`masked_mean` reduces it. A mask
lets the per-genre trainer count, for each genre, only its balanced sample of posters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from postergenre.training.config import LOSSES


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per element, computed from logits for numerical stability."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


class AsymmetricLoss:
    """Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021).

    Multi-label posters have many more negatives than positives per genre. ASL focuses the
    negatives harder than the positives (``gamma_neg > gamma_pos``) and shifts the negatives'
    probability down by ``clip`` so that easy negatives (p < clip) contribute nothing:

        L+ = -(1 - p)^gamma_pos log(p)
        L- = -p_m^gamma_neg log(1 - p_m),  p_m = max(p - clip, 0)

    Defaults are the paper's recommendation for multi-label training.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        if gamma_neg < 0 or gamma_pos < 0 or not 0 <= clip < 1:
            raise ValueError(
                f"ASL needs gamma_neg, gamma_pos >= 0 and 0 <= clip < 1, got {gamma_neg}, {gamma_pos}, {clip}"
            )
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        # log(p) through logsigmoid stays finite for very negative logits.
        loss_pos = -F.logsigmoid(logits) * (1 - p).pow(self.gamma_pos)
        p_shifted = (p - self.clip).clamp(min=0)
        loss_neg = -torch.log((1 - p_shifted).clamp(min=self.eps)) * p_shifted.pow(self.gamma_neg)
        return targets * loss_pos + (1 - targets) * loss_neg


def create_loss(name: str, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05):
    """A per-element loss by name: ``bce`` or ``asl``."""
    if name == "bce":
        return bce_loss
    if name == "asl":
        return AsymmetricLoss(gamma_neg, gamma_pos, clip)
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")


def masked_mean(loss: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss, over all elements or, with a 0/1 ``mask`` (N, G), genre by genre.

    With a mask each genre's loss is the mean over its own chosen posters, and the genres are
    averaged; a genre with no chosen poster in the batch adds nothing.
    """
    if mask is None:
        return loss.mean()
    counts = mask.sum(0)
    per_genre = (loss * mask).sum(0) / counts.clamp(min=1)
    present = counts > 0
    return per_genre[present].sum() / present.sum().clamp(min=1)
