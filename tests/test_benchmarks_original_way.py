"""benchmarks/per_genre_original_way.py: both ways train and score on a tiny generated dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script, write_dataset

from postergenre.training.config import resolve_preprocessing

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "per_genre_original_way.py"
GENRES = ["Action", "Comedy", "Drama"]
N_POSTERS = 40
EPOCHS = 2
# Every non-empty combination of the three genres in turn, so each genre has both classes on each side of the split.
LABELS = {f"tt{k:07d}": [g for j, g in enumerate(GENRES) if (k % 7 + 1) >> j & 1] for k in range(N_POSTERS)}


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    """Both ways run once on tiny posters at 64x48, counting the posters the original way decodes."""
    subset = bench.load_subset(
        write_dataset(tmp_path_factory.mktemp("tiny"), LABELS, GENRES), N_POSTERS, GENRES, seed=0
    )
    config = bench.benchmark_config(epochs=EPOCHS, lr=1e-3, batch_size=8, seed=0)
    config.input_size = (64, 48)
    preprocessing = resolve_preprocessing(config)

    decoded, load_input = [], bench.load_input

    def counting_load_input(path, preprocessing):
        decoded.append(path)
        return load_input(path, preprocessing)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "load_input", counting_load_input)
        original = bench.original_way(subset, config, preprocessing, threads=1)
    cached = bench.cached_way(subset, config, preprocessing, tmp_path_factory.mktemp("cache"))
    return subset, original, cached, decoded


def test_both_ways_score_every_genre(results):
    """Check that each way gives a test AUC in [0, 1] for every genre and the macro."""
    _, original, cached, _ = results
    for way in (original, cached):
        assert set(way.auc) == {*GENRES, "macro"}
        assert all(0 <= auc <= 1 for auc in way.auc.values()), way.auc


def test_genre_aucs_match_scikit_learn(bench):
    """Check that per-genre AUCs equal scikit-learn's, a one-class genre is NaN and the macro skips it."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y_true = np.column_stack([rng.integers(0, 2, 30), rng.integers(0, 2, 30), np.zeros(30, int)])
    y_score = rng.normal(size=(30, 3))
    auc = bench.genre_aucs(y_true, y_score, GENRES)
    expected = [roc_auc_score(y_true[:, g], y_score[:, g]) for g in range(2)]
    assert np.allclose([auc["Action"], auc["Comedy"]], expected)
    assert np.isnan(auc["Drama"])
    assert np.isclose(auc["macro"], np.mean(expected))


def test_original_way_decodes_every_balanced_sample_every_epoch(results):
    """Check that the original way decodes training posters once for standardisation, then each genre's sample
    every epoch, then the test posters once."""
    subset, _, _, decoded = results
    positives = subset.y_train.sum(0)
    per_epoch = positives + np.minimum(positives, len(subset.y_train) - positives)
    expected = len(subset.train_paths) + EPOCHS * int(per_epoch.sum()) + len(subset.test_paths)
    assert len(decoded) == expected
    assert set(decoded) == set(subset.train_paths) | set(subset.test_paths)


def test_each_way_times_its_steps(results):
    """Check that each way reports non-negative seconds per step, and that the steps add up to the total."""
    _, original, cached, _ = results
    assert set(original.seconds) == {"setup", "train", "test", "total", "decode"}
    assert set(cached.seconds) == {"export", "extract", "setup", "train", "test", "total"}
    for way in (original, cached):
        assert all(seconds >= 0 for seconds in way.seconds.values())
        assert np.isclose(way.seconds["total"], way.seconds["setup"] + way.seconds["train"] + way.seconds["test"])
    assert np.isclose(cached.seconds["setup"], cached.seconds["export"] + cached.seconds["extract"])
    assert original.seconds["decode"] < original.seconds["total"]


def test_print_table_shows_ratio_and_aucs(bench, results, capsys):
    """Check that the table prints both ways' AUCs and the ratio of their times."""
    subset, original, cached, _ = results
    bench.print_table(subset.genres, original, cached)
    out = capsys.readouterr().out
    assert f"{original.auc['macro']:8.3f}" in out and f"{cached.auc['macro']:8.3f}" in out
    assert f"original / cached: {original.seconds['total'] / cached.seconds['total']:.1f}x in all" in out


def test_main_skips_without_the_dataset(bench, tmp_path, monkeypatch, capsys):
    """Check that the benchmark skips with a message naming the folder when train.csv is absent."""
    monkeypatch.setattr(sys, "argv", ["per_genre_original_way.py", str(tmp_path)])
    assert bench.main() == 0
    assert f"skipped: the shared dataset is absent (looked in {tmp_path})" in capsys.readouterr().out


def test_unknown_genre_is_named(bench, tmp_path):
    """Check that a genre the CSV lacks is named with the valid choices."""
    root = write_dataset(tmp_path / "tiny", {f"tt{k:07d}": ["Drama"] for k in range(12)}, GENRES)
    with pytest.raises(ValueError, match=r"unknown genre.*Western.*expected some of Action, Comedy, Drama"):
        bench.load_subset(root, 12, ["Western"], seed=0)


def test_subset_size_out_of_range_is_refused(bench, tmp_path):
    """Check that --n beyond the labelled posters says the valid range."""
    root = write_dataset(tmp_path / "tiny", {f"tt{k:07d}": ["Drama"] for k in range(12)}, GENRES)
    with pytest.raises(ValueError, match=r"--n must be between 10 and 12 \(the labelled posters\), got 50"):
        bench.load_subset(root, 50, ["Drama"], seed=0)
