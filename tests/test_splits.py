"""Train/validation/test splits: reproducible, stratified per genre, and never leaking a poster across sides."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import random_labels, write_poster
from PIL import Image

from postergenre.data.dataset import load_dataset
from postergenre.data.duplicates import poster_groups
from postergenre.data.images import scan_images
from postergenre.data.splits import SIDES, load_split, make_split, save_split, split_problems
from postergenre.errors import DataError

GENRES = ["Drama", "Comedy", "Action", "Romance", "Horror", "Sci-Fi", "Western"]
# Positive rates from common to rare, like the real dataset's spread: about 200 Drama and 12 Western in 400.
RATES = [0.5, 0.35, 0.2, 0.12, 0.08, 0.05, 0.03]


def synthetic_labels(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """``n`` ids with independent 0/1 genres at RATES (so some posters have none, as after genre selection)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(GENRES))) < RATES).astype("int8")
    return pd.DataFrame(y, index=pd.Index([f"tt{k:07d}" for k in range(n)], name="Id"), columns=GENRES)


def _worst_share_gap(labels: pd.DataFrame, split: pd.DataFrame) -> float:
    """The largest |share of a genre on one side - its overall share|, in units of one poster on that side."""
    worst = 0.0
    for side in SIDES:
        on_side = (split["split"] == side).to_numpy()
        gap = (labels[on_side].mean() - labels.mean()).abs().max()
        worst = max(worst, gap * on_side.sum())
    return worst


# Iterative stratification hands each genre's positives to the side that still wants most of them, so
# each genre ends within about one poster of its target count on every side (measured on this data:
# at most 0.72 of a poster over seeds 0-9). Two posters' worth (2 / side size: 3.1 points on the
# 64-poster validation side) leaves margin, while a plain random split of the same sizes misses it
# (measured 4.4 to 9.2 posters), so the test can fail.
SHARE_TOLERANCE_POSTERS = 2.0


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_same_split():
    """Check that the same labels and seed give the same split."""
    labels = synthetic_labels()
    pd.testing.assert_frame_equal(make_split(labels, seed=3), make_split(labels, seed=3))


def test_different_seed_different_split():
    """Check that another seed gives another test set."""
    labels = synthetic_labels()
    a, b = make_split(labels, seed=0), make_split(labels, seed=1)
    assert set(a.index[a["split"] == "test"]) != set(b.index[b["split"] == "test"])


# --- shape and sizes ---------------------------------------------------------------------------


def test_every_id_once_on_one_side():
    """Check that the split has each id once, in the labels' order, on three sides of about 64/16/20%."""
    labels = synthetic_labels()
    split = make_split(labels)
    assert list(split.index) == list(labels.index) and split.index.name == "Id"
    assert list(split.columns) == ["split", "group"] and (split["group"] == split.index).all()
    counts = split["split"].value_counts()
    assert set(counts.index) == set(SIDES)
    assert abs(counts["test"] - 80) <= 2 and abs(counts["validation"] - 64) <= 2
    assert split_problems(split) == []


def test_sizes_follow_the_arguments():
    """Check that test_size and validation_size set the sides' sizes."""
    counts = make_split(synthetic_labels(), test_size=0.5, validation_size=0.5)["split"].value_counts()
    assert abs(counts["test"] - 200) <= 2 and abs(counts["validation"] - 100) <= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_genre_share_is_kept_on_each_side(seed):
    """Check that each genre's share on each side is within two posters' worth of its overall share."""
    labels = synthetic_labels(seed=seed)
    assert _worst_share_gap(labels, make_split(labels, seed=seed)) <= SHARE_TOLERANCE_POSTERS


def test_share_tolerance_would_catch_a_random_split():
    """Check that the tolerance is tight enough that a random split of the same sizes breaks it."""
    labels = synthetic_labels()
    sides = np.array(["test"] * 80 + ["validation"] * 64 + ["train"] * 256, dtype=object)
    random_split = pd.DataFrame({"split": np.random.default_rng(0).permutation(sides)}, index=labels.index)
    assert _worst_share_gap(labels, random_split) > SHARE_TOLERANCE_POSTERS


# --- groups ------------------------------------------------------------------------------------


def test_groups_never_cross_sides():
    """Check that ids sharing a group key land on one side and the key is kept in the group column."""
    labels = synthetic_labels()
    ids = list(labels.index)
    # Groups of two to four ids, over a third of the posters.
    groups = {i: ids[(k // 4) * 4] for k, i in enumerate(ids[:150]) if k % 4 != 3 or k % 8 == 3}
    split = make_split(labels, groups, seed=5)
    assert split_problems(split, groups) == [] and split_problems(split) == []
    for key in set(groups.values()):
        members = [i for i in ids if groups.get(i, i) == key]
        assert split.loc[members, "split"].nunique() == 1 and (split.loc[members, "group"] == key).all()
    assert (split.loc[ids[200:], "group"] == ids[200:]).all()


def test_identical_posters_land_on_one_side(tmp_path):
    """Check that byte-identical and re-encoded posters, found by a scan of real files, share a side."""
    labels = synthetic_labels(120, seed=4)
    ids = list(labels.index)
    paths = {}
    for k, id_ in enumerate(ids):
        paths[id_] = tmp_path / f"{id_}.jpg"
        write_poster(paths[id_], seed=k)
    copies = {ids[1]: ids[50], ids[2]: ids[60], ids[3]: ids[119]}  # original -> copy
    for original, copy in copies.items():
        shutil.copyfile(paths[original], paths[copy])
    Image.open(paths[ids[4]]).save(paths[ids[90]], quality=55)  # a re-encoded copy
    copies[ids[4]] = ids[90]

    groups = poster_groups(ids, scan_images(paths, progress=False))
    assert all(groups[original] == groups[copy] for original, copy in copies.items())
    for seed in range(4):
        split = make_split(labels, groups, seed=seed)
        assert split_problems(split, groups) == []
        assert all(split.loc[original, "split"] == split.loc[copy, "split"] for original, copy in copies.items())


# --- split_problems ----------------------------------------------------------------------------


def _hand_split(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"split": [s for _, s, _ in rows], "group": [g for _, _, g in rows]},
        index=pd.Index([i for i, _, _ in rows], name="Id"),
    )


def test_split_problems_detects_a_group_across_sides():
    """Check that a group with members on two sides is reported with its members."""
    split = _hand_split([("a", "train", "a"), ("b", "test", "a"), ("c", "train", "c"), ("d", "validation", "d")])
    assert split_problems(split) == ["identical posters a, b are on different sides"]


def test_split_problems_uses_given_groups():
    """Check that groups passed in replace the split's own group column."""
    split = _hand_split([("a", "train", "a"), ("b", "test", "b"), ("c", "train", "c"), ("d", "test", "d")])
    assert split_problems(split) == []
    assert split_problems(split, {"c": "c", "d": "c"}) == ["identical posters c, d are on different sides"]
    assert split_problems(split, {"a": "g", "c": "g"}) == []


def test_split_problems_detects_an_id_on_two_sides():
    """Check that one id listed on two sides is reported once, as such."""
    split = _hand_split([("a", "train", "a"), ("b", "test", "b"), ("a", "test", "a")])
    assert split_problems(split) == ["id a is on 2 sides"]


# --- save and load -----------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    """Check that a saved split loads back equal, as Id,split,group."""
    labels = synthetic_labels(60)
    split = make_split(labels, {labels.index[1]: labels.index[0]})
    save_split(split, tmp_path / "split.csv")
    assert (tmp_path / "split.csv").read_text().splitlines()[0] == "Id,split,group"
    loaded = load_split(tmp_path / "split.csv", list(labels.index))
    pd.testing.assert_frame_equal(loaded, split, check_dtype=False)


def test_load_split_without_group_column(tmp_path):
    """Check that a split file without a group column gives each id its own group."""
    (tmp_path / "split.csv").write_text("Id,split\na,train\nb,test\n")
    assert load_split(tmp_path / "split.csv")["group"].to_dict() == {"a": "a", "b": "b"}


def test_load_split_rejects_other_ids(tmp_path):
    """Check that a split that does not cover the dataset's ids is an error counting and naming them."""
    save_split(_hand_split([("a", "train", "a"), ("b", "test", "b"), ("c", "validation", "c")]), tmp_path / "s.csv")
    with pytest.raises(
        DataError,
        match=r"s.csv: the split does not match the dataset: 2 posters are not in it \(d, e\), 1 ids in it are not "
        r"in the dataset \(c\); delete it to make a new one",
    ):
        load_split(tmp_path / "s.csv", ["a", "b", "d", "e"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Id,split,group\na,train,a\nb,tset,b\n", r"line 3, id b, column split: unknown side 'tset' \(1 rows in all\)"),
        ("Id,split,group\na,train,a\nb,,b\n", r"line 3, id b, column split: unknown side ''"),
        ("Id,side\na,train\n", r"no 'split' column \(columns found: Id, side\); expected columns Id,split,group"),
        ("id,split\na,train\n", r"no 'Id' column \(columns found: id, split\)"),
        ("Id,split\na,train\nb,test\na,test\n", r"id a appears on lines 2, 4 \(1 repeated rows in all\); keep one row"),
        ("", r"cannot read the split \(No columns to parse from file\); delete it to make a new one"),
    ],
    ids=["bad-side", "empty-side", "no-split-column", "no-id-column", "repeated-id", "empty-file"],
)
def test_load_split_errors(tmp_path, content, expected):
    """Check that a bad split file is an error naming the file, the line, id or column, and the fix."""
    (tmp_path / "split.csv").write_text(content)
    with pytest.raises(DataError, match="split.csv: " + expected):
        load_split(tmp_path / "split.csv")


def test_load_split_missing_file(tmp_path):
    """Check that a split path that does not exist is an error saying so."""
    with pytest.raises(DataError, match=r"nothere.csv: split file not found; check the path"):
        load_split(tmp_path / "nothere.csv")


# --- small and odd inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("positives", [1, 2])
def test_genre_with_very_few_positives(positives):
    """Check that a genre with one or two positives does not crash the split and its positives are placed."""
    labels = synthetic_labels(100)
    labels["Rare"] = 0
    labels.iloc[:positives, -1] = 1
    split = make_split(labels)
    assert split["split"].notna().all() and split["split"].nunique() == 3


def test_single_genre_column():
    """Check that labels with one genre column split (the stratifier refuses a single column on its own)."""
    labels = synthetic_labels(100)[["Drama"]]
    split = make_split(labels)
    assert split["split"].value_counts().to_dict() == {"train": 64, "test": 20, "validation": 16}


def test_posters_without_any_genre():
    """Check that posters with no positive genre at all still split three ways."""
    labels = synthetic_labels(50) * 0
    assert set(make_split(labels)["split"]) == set(SIDES)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 10])
def test_tiny_datasets_fill_every_side(n):
    """Check that three to ten posters still give every side at least one poster, whatever the seed."""
    genres = GENRES[:5]
    for seed in range(5):
        ids = random_labels(n, genres, seed=seed)
        labels = pd.DataFrame({g: [int(g in v) for v in ids.values()] for g in genres}, index=list(ids))
        split = make_split(labels, seed=seed)
        assert set(split["split"]) == set(SIDES), (n, seed)


def test_too_few_posters_to_split():
    """Check that fewer than three posters (or groups) is an error saying to add posters."""
    with pytest.raises(DataError, match="cannot split 2 posters into train, validation and test; add more posters"):
        make_split(synthetic_labels(2))
    labels = synthetic_labels(5)
    with pytest.raises(DataError, match="cannot split 2 posters"):
        make_split(labels, {i: ("a" if k < 3 else "b") for k, i in enumerate(labels.index)})


@pytest.mark.parametrize(("test_size", "validation_size"), [(0, 0.2), (1, 0.2), (0.2, 0), (0.2, 1.5)])
def test_bad_sizes(test_size, validation_size):
    """Check that side sizes outside (0, 1) are refused with the values given."""
    with pytest.raises(ValueError, match="must be between 0 and 1"):
        make_split(synthetic_labels(20), test_size=test_size, validation_size=validation_size)


# --- the real dataset --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared_data
def test_shared_dataset_loads_and_splits_without_leakage(shared_dataset):
    """Check the real dataset's counts and that a grouped split keeps its two duplicate-poster pairs together."""
    dataset = load_dataset(shared_dataset)
    assert dataset.n_rows == 7254 and len(dataset.labels) == 7242 and dataset.duplicate_rows == 12
    assert len(dataset.image_paths) == 7242 and len(dataset.unlabelled_images) == 625
    assert dataset.missing_images == [] and len(dataset.warnings) == 1  # the merged duplicate rows

    records = scan_images(dataset.image_paths, progress=False)
    assert not [r.id for r in records if r.error]
    groups = poster_groups(dataset.ids, records)
    split = make_split(dataset.labels.loc[dataset.ids], groups, seed=0)
    assert split_problems(split, groups) == []
    for a, b in [("tt0402577", "tt0420286"), ("tt2546300", "tt2546294")]:
        assert groups[a] == groups[b] and split.loc[a, "split"] == split.loc[b, "split"]
