"""Heads: small networks that turn a backbone's pooled features into one logit per genre.

Every head carries the feature standardisation (mean and std of the training features) and a
per-genre logit offset inside it, so a saved head maps raw pooled features straight to logits:

    logits = layers((features - feature_mean) / feature_std) + logit_offset

The offset is zero for a multi-label head; a per-genre head trained on balanced samples stores
its prior correction there (see :mod:`postergenre.training.per_genre`).

Tensor names are part of the saved-model format: :mod:`postergenre.inference.predictor` runs the
same arithmetic in NumPy from ``model.safetensors``, without torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

HEAD_TYPES = ("linear", "mlp", "per_genre_mlp")
# A head per backbone of an ensemble, each reading its own backbone's columns (see EnsembleHead).
ENSEMBLE = "ensemble"
DEFAULT_HIDDEN = 256  # TrainConfig.hidden_size for a shared MLP
DEFAULT_DROPOUT = 0.5
# Features with (almost) no spread in training would blow up when divided by their std.
MIN_FEATURE_STD = 1e-6


class ByteDropout(nn.Module):
    """Dropout whose mask comes from random bytes: a unit is dropped when its byte is below
    ``round(p * 256)``, so ``p`` is kept to the nearest 1/256 (0.5 exactly).

    ``nn.Dropout`` draws a float per unit through Bernoulli sampling, which on the CPU cost more
    than the MLP head's first matrix product: 4.9 ms against 2.0 ms forward and backward for a
    (256, 1280) batch, about a quarter of a warm train. Like ``nn.Dropout`` it scales the kept
    units up in training and is the identity in eval mode; it has no state, so saved heads load
    either way. ``generator`` (a NumPy generator; None: torch's global one) lets heads train side
    by side, each drawing its own reproducible masks.
    """

    def __init__(self, p: float = DEFAULT_DROPOUT):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 256)
        self.scale = 256 / (256 - self.threshold)
        self.generator: np.random.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if self.generator is None or x.device.type != "cpu":
            bytes_ = torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device)
        else:  # NumPy hands out random bytes about 5x faster than torch.randint draws uint8s
            bytes_ = torch.frombuffer(bytearray(self.generator.bytes(x.numel())), dtype=torch.uint8).view(x.shape)
        keep = bytes_ >= self.threshold
        return x * (keep * self.scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Standardised(nn.Module):
    """Shared part of every head: the standardisation buffers and the logit offset."""

    def __init__(self, num_features: int, num_genres: int):
        super().__init__()
        self.num_features, self.num_genres = num_features, num_genres
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.register_buffer("logit_offset", torch.zeros(num_genres))

    def set_standardisation(self, features: np.ndarray | torch.Tensor) -> None:
        """Take the mean and std of these (training) features, shape (N, num_features)."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.feature_mean.copy_(x.mean(0))
        self.feature_std.copy_(x.std(0, unbiased=False).clamp_min(MIN_FEATURE_STD))

    @torch.no_grad()
    def init_output_bias(self, logits: np.ndarray) -> None:
        """Start each genre's output bias at these logits (its prior log-odds): training then
        begins from the base rate instead of spending its first epochs getting there."""
        self.output_bias().copy_(torch.as_tensor(np.asarray(logits, dtype=np.float32)))

    def output_bias(self) -> torch.Tensor:
        return self.fc.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.forward_standardised(self.standardise(features))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of features already standardised: the training loop standardises its features
        once, not in every step (a tenth of a head's training time)."""
        return self.forward_head(x) + self.logit_offset

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LinearHead(_Standardised):
    """One linear layer: logistic regression per genre on standardised features.

    Dropout on the input features regularises the ~1000 weights per genre, which a few thousand
    posters otherwise overfit within a few epochs.
    """

    kind = "linear"

    def __init__(self, num_features: int, num_genres: int, dropout: float = 0.0):
        super().__init__(num_features, num_genres)
        self.dropout_rate = dropout
        self.dropout = ByteDropout(dropout)
        self.fc = nn.Linear(num_features, num_genres)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "num_features": self.num_features,
            "num_genres": self.num_genres,
            "dropout": self.dropout_rate,
        }


class MLPHead(_Standardised):
    """One hidden ReLU layer shared by all genres, with dropout before each linear layer."""

    kind = "mlp"

    def __init__(
        self, num_features: int, num_genres: int, hidden: int = DEFAULT_HIDDEN, dropout: float = DEFAULT_DROPOUT
    ):
        super().__init__(num_features, num_genres)
        self.hidden_size, self.dropout_rate = hidden, dropout
        self.dropout = ByteDropout(dropout)
        self.hidden = nn.Linear(num_features, hidden)
        self.fc = nn.Linear(hidden, num_genres)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.relu(self.hidden(self.dropout(x)))))

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "num_features": self.num_features,
            "num_genres": self.num_genres,
            "hidden": self.hidden_size,
            "dropout": self.dropout_rate,
        }


class PerGenreMLPHead(MLPHead):
    """A separate small MLP per genre, computed at once: ``hidden`` units of its own for each genre.

    The hidden layer is one (D -> G*H) linear layer; genre g reads only its own H units, through
    ``fc_weight[g]`` (G, H) and ``fc_bias[g]``. Nothing is shared between genres, so each genre's
    model is what it would be if trained alone on its own balanced sample.
    """

    kind = "per_genre_mlp"

    def __init__(self, num_features: int, num_genres: int, hidden: int = 64, dropout: float = DEFAULT_DROPOUT):
        _Standardised.__init__(self, num_features, num_genres)
        self.hidden_size, self.dropout_rate = hidden, dropout
        self.dropout = ByteDropout(dropout)
        self.hidden = nn.Linear(num_features, num_genres * hidden)
        # Same initial scale as nn.Linear(hidden, 1) per genre.
        bound = 1 / hidden**0.5
        self.fc_weight = nn.Parameter(torch.empty(num_genres, hidden).uniform_(-bound, bound))
        self.fc_bias = nn.Parameter(torch.empty(num_genres).uniform_(-bound, bound))

    def output_bias(self) -> torch.Tensor:
        return self.fc_bias

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.hidden(self.dropout(x))))
        h = h.view(len(x), self.num_genres, self.hidden_size)
        return (h * self.fc_weight).sum(-1) + self.fc_bias


class EnsembleHead(nn.Module):
    """The heads of an ensemble of backbones, one per backbone, their logits averaged.

    The ensemble's features are its backbones' pooled features side by side; member ``k`` reads
    the columns ``columns[k] = (start, stop)``, standardises them and adds its own offset, so the
    mean of the members' logits needs nothing of its own. Trained apart, each member is what that
    backbone's head would be alone: on the shared dataset the mean of three such heads beat one
    head over the joined features (see :mod:`postergenre.training.config`).
    """

    kind = ENSEMBLE

    def __init__(self, members: list[nn.Module], columns: list[tuple[int, int]]):
        super().__init__()
        if len(members) != len(columns) or len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, one column range each; got {len(members)}")
        self.members = nn.ModuleList(members)
        self.columns = [(int(start), int(stop)) for start, stop in columns]
        self.num_features = self.columns[-1][1]
        self.num_genres = members[0].num_genres

    @property
    def logit_offset(self) -> torch.Tensor:
        """The mean of the members' offsets: the part of the ensemble's logits that is prior correction."""
        return torch.stack([member.logit_offset for member in self.members]).mean(0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        spans = zip(self.members, self.columns, strict=True)
        logits = [member(features[:, start:stop]) for member, (start, stop) in spans]
        return torch.stack(logits).mean(0)

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "num_features": self.num_features,
            "num_genres": self.num_genres,
            "members": [member.describe() for member in self.members],
            "columns": [list(span) for span in self.columns],
        }


def create_head(
    kind: str,
    num_features: int,
    num_genres: int,
    *,
    hidden: int = DEFAULT_HIDDEN,
    dropout: float = DEFAULT_DROPOUT,
) -> _Standardised:
    """A head by name: ``linear``, ``mlp`` or ``per_genre_mlp``."""
    if kind == "linear":
        return LinearHead(num_features, num_genres, dropout)
    if kind == "mlp":
        return MLPHead(num_features, num_genres, hidden, dropout)
    if kind == "per_genre_mlp":
        return PerGenreMLPHead(num_features, num_genres, hidden, dropout)
    raise ValueError(f"unknown head {kind!r}; expected one of {', '.join(HEAD_TYPES)}")


def head_from_description(description: dict) -> _Standardised:
    """An empty head of the shape that :meth:`describe` wrote (``model.json``'s ``head``)."""
    if description["type"] == ENSEMBLE:
        members = [head_from_description(member) for member in description["members"]]
        return EnsembleHead(members, [tuple(span) for span in description["columns"]])
    return create_head(
        description["type"],
        description["num_features"],
        description["num_genres"],
        hidden=description.get("hidden", DEFAULT_HIDDEN),
        dropout=description.get("dropout", DEFAULT_DROPOUT),
    )
