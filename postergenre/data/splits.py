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

    # The test split must leave two groups behind, one for train and one for validation.
    rest, test = _stratified_split(group_labels.to_numpy(), np.arange(n_groups), test_size, seed, min_kept=2)
    train, validation = _stratified_split(group_labels.to_numpy()[rest], rest, validation_size, seed)
    side_of_group = np.empty(n_groups, dtype=object)
    side_of_group[train], side_of_group[validation], side_of_group[test] = SIDES
    side = pd.Series(side_of_group, index=group_labels.index)
    return pd.DataFrame({"split": side.loc[group_of.to_numpy()].to_numpy(), "group": group_of.to_numpy()}, index=ids)


def _stratified_split(
    y: np.ndarray, members: np.ndarray, size: float, seed: int, min_kept: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n_held_out = max(1, round(size * len(members)))
    if n_held_out > len(members) - min_kept:
        raise DataError(f"cannot hold out {size:.0%} of {len(members)} posters; add more posters")
    if y.shape[1] < 2:
        # iterstrat refuses a single label column ("binary" target); an all-zero column changes nothing.
        y = np.column_stack([y, np.zeros((len(y), 2 - y.shape[1]), dtype=y.dtype)])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_held_out, random_state=seed)
    kept, held_out = next(splitter.split(np.zeros(len(members)), y))
    if len(held_out) == 0 or len(kept) < min_kept:
        # With a handful of posters iterative stratification can ignore the requested size and leave
        # a side empty (measured on random labels: one or two of five seeds at 3 to 7 posters);
        # stratifying so few means nothing, so take a seeded random split of the requested size.
        order = np.random.default_rng(seed).permutation(len(members))
        kept, held_out = order[n_held_out:], order[:n_held_out]
    return members[np.sort(kept)], members[np.sort(held_out)]


def save_split(split: pd.DataFrame, path: str | Path) -> None:
    split.rename_axis("Id").to_csv(path)


def load_split(path: str | Path, ids: list[str] | None = None) -> pd.DataFrame:
    """Read a ``split.csv``; with ``ids``, check that it covers exactly those posters."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; check the path, or leave it out to make a new split")
    try:
        split = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the split ({str(exc).strip()}); delete it to make a new one") from exc
    missing_columns = [c for c in ("Id", "split") if c not in split.columns]
    if missing_columns:
        raise DataError(
            f"{path}: no {' or '.join(repr(c) for c in missing_columns)} column (columns found: "
            f"{', '.join(split.columns) or 'none'}); expected columns Id,split,group"
        )
    # Line numbers for messages: line 1 is the header.
    lines = pd.Series(np.arange(2, len(split) + 2), index=split["Id"].to_numpy())
    split = split.set_index("Id")
    bad_side = ~split["split"].isin(SIDES)
    if bad_side.any():
        k = int(bad_side.to_numpy().argmax())
        raise DataError(
            f"{path}: line {k + 2}, id {split.index[k]}, column split: unknown side {split['split'].iat[k]!r} "
            f"({int(bad_side.sum())} rows in all); expected one of {', '.join(SIDES)}"
        )
    repeated = split.index[split.index.duplicated()]
    if len(repeated):
        first = repeated[0]
        raise DataError(
            f"{path}: id {first} appears on lines {', '.join(map(str, lines[first]))} "
            f"({len(repeated)} repeated rows in all); keep one row per id, or delete the file to make a new split"
        )
    if "group" not in split.columns:
        split["group"] = split.index
    if ids is not None:
        _check_split_ids(split, ids, path)
    return split


def _check_split_ids(split: pd.DataFrame, ids: list[str], path: Path) -> None:
    in_split = set(split.index)
    missing = [i for i in ids if i not in in_split]
    extra = sorted(in_split - set(ids))
    if missing or extra:
        raise DataError(
            f"{path}: the split does not match the dataset: {len(missing)} posters are not in it"
            f"{_first(missing)}, {len(extra)} ids in it are not in the dataset{_first(extra)}; delete it to make "
            "a new one, or use the dataset it was made for"
        )


def _first(ids: list[str], n: int = 3) -> str:
    if not ids:
        return ""
    return f" ({', '.join(ids[:n])}{', ...' if len(ids) > n else ''})"


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
        if len(members) > 1:  # one id on two sides is reported above
            problems.append(f"identical posters {', '.join(members)} are on different sides")
    return problems
