"""benchmarks/per_genre_original_way.py: both ways train and score on a tiny generated dataset."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset

from postergenre.training.config import resolve_preprocessing

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "per_genre_original_way.py"
GENRES = ["Action", "Comedy", "Drama"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("per_genre_original_way", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the script is being executed.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture
def subset(bench, tmp_path):
    """Forty posters; every combination of three genres but none, so each genre has both classes in test."""
    labels = {f"tt{k:07d}": [g for j, g in enumerate(GENRES) if (k % 7 + 1) >> j & 1] for k in range(40)}
    root = write_dataset(tmp_path / "tiny", labels, GENRES)
    return bench.load_subset(root, 40, GENRES, seed=0)


def test_both_ways_give_aucs_and_timings(bench, subset, tmp_path):
    """Check that each way scores every genre and the macro in [0, 1] and times its steps."""
    config = bench.benchmark_config(epochs=2, lr=1e-3, batch_size=8, seed=0)
    config.input_size = (64, 48)
    preprocessing = resolve_preprocessing(config)

    original = bench.original_way(subset, config, preprocessing, threads=1)
    cached = bench.cached_way(subset, config, preprocessing, tmp_path / "cache")

    assert set(original.seconds) == {"setup", "train", "test", "total", "decode"}
    assert set(cached.seconds) == {"export", "extract", "setup", "train", "test", "total"}
    for way in (original, cached):
        assert set(way.auc) == {*GENRES, "macro"}
        assert all(0 <= auc <= 1 for auc in way.auc.values())
        assert all(seconds >= 0 for seconds in way.seconds.values())
        assert np.isclose(way.seconds["total"], way.seconds["setup"] + way.seconds["train"] + way.seconds["test"])


def test_unknown_genre_is_named(bench, tmp_path):
    """Check that a genre the CSV lacks is named with the valid choices."""
    root = write_dataset(tmp_path / "tiny", {f"tt{k:07d}": ["Drama"] for k in range(12)}, GENRES)
    with pytest.raises(ValueError, match=r"unknown genre.*Western.*expected some of Action, Comedy, Drama"):
        bench.load_subset(root, 12, ["Western"], seed=0)
