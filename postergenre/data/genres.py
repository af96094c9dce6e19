"""Which genre columns a model is trained and evaluated on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

logger = logging.getLogger(__name__)

# Columns that mark the absence of a genre rather than a genre: IMDb's "no genre listed".
NOT_GENRES = ("N/A",)
# A genre needs this many positive posters to be trained and evaluated by default. Below it a
# split leaves a handful of positives per side and every per-genre figure is noise.
DEFAULT_MIN_POSITIVES = 10


@dataclass
class GenreSelection:
    """The genres kept, in the CSV's order, and the ones left out with the reason."""

    kept: list[str]
    dropped: dict[str, str] = field(default_factory=dict)

    def message(self) -> str | None:
        if not self.dropped:
            return None
        reasons = "; ".join(f"{g} ({why})" for g, why in self.dropped.items())
        return f"{len(self.dropped)} genres are left out of training and evaluation: {reasons}"


def select_genres(labels: pd.DataFrame, min_positives: int = DEFAULT_MIN_POSITIVES) -> GenreSelection:
    """Keep the genre columns that are real genres with at least ``min_positives`` positives."""
    counts = labels.sum()
    kept, dropped = [], {}
    for genre in labels.columns:
        if genre in NOT_GENRES:
            dropped[genre] = "marks a poster with no genre, not a genre"
        elif counts[genre] < min_positives:
            dropped[genre] = f"{counts[genre]} positives, fewer than the minimum of {min_positives}"
        else:
            kept.append(genre)
    selection = GenreSelection(kept, dropped)
    if selection.message():
        logger.info(selection.message() + " (--min-positives sets the minimum)")
    if not kept:
        from postergenre.errors import DataError

        # Name every genre's reason: "N/A" alone, say, is left out whatever its count.
        reasons = "; ".join(f"{g} ({why})" for g, why in dropped.items()) or "no genre columns"
        raise DataError(f"no genre is left to train on: {reasons}; lower --min-positives or use a larger dataset")
    return selection
