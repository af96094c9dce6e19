"""Deterministic train/validation/test splits.

Iterative stratification (Sechidis et al., 2011, via the ``iterative-stratification`` package)
keeps each genre's share close on every side, which a random split does not for rare genres.
Posters that are the same picture (byte-identical or near-identical) form one group, and a group
never straddles two sides: otherwise the test set holds posters seen in training.

The split is written to ``split.csv`` (columns ``Id``, ``split``, ``group``) so that later runs
reuse the same test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from postergenre.errors import DataError

SIDES = ("train", "validation", "test")
DEFAULT_TEST_SIZE = 0.2
# Validation is taken from what remains after the test set: 20% of it, 16% of the whole.
DEFAULT_VALIDATION_SIZE = 0.2


def make_split(
    labels: pd.DataFrame,
    groups: dict[str, str] | None = None,
    *,
    seed: int = 0,
    test_size: float = DEFAULT_TEST_SIZE,
    validation_size: float = DEFAULT_VALIDATION_SIZE,
) -> pd.DataFrame:
    """Split the ids of ``labels`` (index ``Id``, 0/1 genre columns) three ways.

    Args:
        labels: one row per id.
        groups: a group key per id; ids with one key land on the same side. Default: each id alone.
        seed: the same seed and labels give the same split.
        test_size: share of the groups in the test set.
        validation_size: share of the remaining groups in the validation set.

    Returns:
        A frame indexed by ``Id`` with columns ``split`` and ``group``, in the order of ``labels``.
    """
    if not 0 < test_size < 1 or not 0 < validation_size < 1:
        raise ValueError(f"test_size and validation_size must be between 0 and 1, got {test_size}, {validation_size}")
    ids = labels.index
    group_of = pd.Series([groups.get(i, i) if groups else i for i in ids], index=ids, name="group")
    # A group's labels are the union of its members'; identical posters normally agree anyway.
    group_labels = labels.groupby(group_of.to_numpy(), sort=True).max()
    n_groups = len(group_labels)
    if n_groups < 3:
        raise DataError(f"cannot split {n_groups} posters into train, validation and test; add more posters")

    rest, test = _stratified_split(group_labels.to_numpy(), np.arange(n_groups), test_size, seed)
    train, validation = _stratified_split(group_labels.to_numpy()[rest], rest, validation_size, seed)
    side_of_group = np.empty(n_groups, dtype=object)
    side_of_group[train], side_of_group[validation], side_of_group[test] = SIDES
    side = pd.Series(side_of_group, index=group_labels.index)
    return pd.DataFrame({"split": side.loc[group_of.to_numpy()].to_numpy(), "group": group_of.to_numpy()}, index=ids)


def _stratified_split(y: np.ndarray, members: np.ndarray, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n_held_out = max(1, round(size * len(members)))
    if n_held_out >= len(members):
        raise DataError(f"cannot hold out {size:.0%} of {len(members)} posters; add more posters")
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_held_out, random_state=seed)
    kept, held_out = next(splitter.split(np.zeros(len(members)), y))
    return members[np.sort(kept)], members[np.sort(held_out)]


def save_split(split: pd.DataFrame, path: str | Path) -> None:
    split.rename_axis("Id").to_csv(path)


def load_split(path: str | Path, ids: list[str] | None = None) -> pd.DataFrame:
    """Read a ``split.csv``; with ``ids``, check that it covers exactly those posters."""
    path = Path(path)
    try:
        split = pd.read_csv(path, dtype=str, index_col="Id", keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the split ({exc}); delete it to make a new one") from exc
    if "split" not in split.columns:
        raise DataError(f"{path}: no 'split' column; expected columns Id,split,group")
    unknown = sorted(set(split["split"]) - set(SIDES))
    if unknown:
        raise DataError(f"{path}: unknown sides {unknown}; expected {', '.join(SIDES)}")
    if "group" not in split.columns:
        split["group"] = split.index
    if ids is not None:
        missing, extra = set(ids) - set(split.index), set(split.index) - set(ids)
        if missing or extra:
            raise DataError(
                f"{path}: the split does not match the dataset ({len(missing)} posters are not in it, "
                f"{len(extra)} in it are not in the dataset); delete it to make a new one or pass --split-seed"
            )
    return split


def split_problems(split: pd.DataFrame, groups: dict[str, str] | None = None) -> list[str]:
    """Ways in which a split leaks between sides: an id on two sides, or a group across sides.

    ``groups`` defaults to the split's own ``group`` column. An empty list means no leakage.
    """
    problems = []
    sides_of_id = split.groupby(level=0)["split"].nunique()
    for id_ in sides_of_id[sides_of_id > 1].index:
        problems.append(f"id {id_} is on {sides_of_id[id_]} sides")
    group_of = pd.Series(groups) if groups is not None else split["group"]
    group_of = group_of.reindex(split.index).fillna(pd.Series(split.index, index=split.index))
    sides_of_group = split["split"].groupby(group_of.to_numpy()).nunique()
    for group in sides_of_group[sides_of_group > 1].index:
        members = sorted(set(group_of[group_of == group].index))
        problems.append(f"identical posters {', '.join(members)} are on different sides")
    return problems
