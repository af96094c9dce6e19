"""Shared fixtures: tiny datasets that tests write themselves, and the real dataset if present."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATASET = Path(
    os.environ.get(
        "POSTERGENRE_SHARED_DATASET",
        Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "movie-posters",
    )
).resolve()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's caches out of the user's cache folder."""
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def shared_dataset() -> Path:
    """The real poster dataset; the test is skipped where it is absent."""
    if not (SHARED_DATASET / "train.csv").is_file():
        pytest.skip(f"the shared poster dataset is absent (looked in {SHARED_DATASET}); set POSTERGENRE_SHARED_DATASET")
    return SHARED_DATASET


def write_poster(path: Path, seed: int, size: tuple[int, int] = (40, 60)) -> None:
    """A small random-colour JPEG; different seeds give different pictures."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_dataset(
    root: Path,
    labels: dict[str, list[str]],
    genres: list[str],
    *,
    images: list[str] | None = None,
    image_folder: str = "images",
) -> Path:
    """A dataset folder with train.csv (Id, Genre, one 0/1 column per genre) and posters.

    ``labels`` maps ids to their genres; ``images`` lists the ids that get a poster (default: all).
    """
    root.mkdir(parents=True, exist_ok=True)
    lines = ["Id,Genre," + ",".join(genres)]
    for id_, marked in labels.items():
        listed = '"[' + ", ".join(f"'{g}'" for g in marked) + ']"'
        lines.append(f"{id_},{listed}," + ",".join("1" if g in marked else "0" for g in genres))
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    folder = root / image_folder
    folder.mkdir(exist_ok=True)
    for k, id_ in enumerate(images if images is not None else labels):
        write_poster(folder / f"{id_}.jpg", seed=k)
    return root


def random_labels(n: int, genres: list[str], seed: int = 0, max_labels: int = 3) -> dict[str, list[str]]:
    """``n`` ids with 1 to ``max_labels`` random genres each."""
    rng = np.random.default_rng(seed)
    return {
        f"tt{k:07d}": sorted(rng.choice(genres, size=rng.integers(1, max_labels + 1), replace=False).tolist())
        for k in range(n)
    }


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """Forty posters over seven genres (an odd count catches hard-coded widths)."""
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
    return write_dataset(tmp_path / "tiny", random_labels(40, genres), genres)


def load_script(path: Path):
    """A script (a benchmark) imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the script is being executed.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine OpenMP's spinning workers make each forward 10-40x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
