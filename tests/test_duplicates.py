"""Posters that are the same picture under different ids: byte-identical, re-encoded, resized."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from postergenre.data.duplicates import (
    NEAR_DUPLICATE_MAX_DISTANCE,
    identical_groups,
    near_duplicate_pairs,
    poster_groups,
)
from postergenre.data.images import ImageRecord, phash_distances, scan_images


def draw_poster(seed: int, size: tuple[int, int] = (120, 180)) -> Image.Image:
    """A poster-like picture: a background and a few coloured blocks placed by ``seed``."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        w, h = int(rng.integers(10, size[0] // 2)), int(rng.integers(10, size[1] // 2))
        draw.rectangle([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


@pytest.fixture
def posters(tmp_path) -> dict[str, Path]:
    """Twelve unrelated posters, a byte-identical copy of one, and re-encoded and resized copies of another.

    tt0000000 = tt0000100 (same bytes); tt0000001 ~ tt0000101 (quality 60), tt0000102 (90% size),
    tt0000103 (110% size, bilinear, quality 75).
    """
    paths = {}
    for k in range(12):
        paths[f"tt{k:07d}"] = tmp_path / f"tt{k:07d}.jpg"
        draw_poster(k).save(paths[f"tt{k:07d}"], quality=90)
    paths["tt0000100"] = tmp_path / "tt0000100.jpg"
    shutil.copyfile(paths["tt0000000"], paths["tt0000100"])
    source = draw_poster(1)
    copies = {
        "tt0000101": (source, {"quality": 60}),
        "tt0000102": (source.resize((108, 162), Image.LANCZOS), {"quality": 85}),
        "tt0000103": (source.resize((132, 198), Image.BILINEAR), {"quality": 75}),
    }
    for id_, (image, options) in copies.items():
        paths[id_] = tmp_path / f"{id_}.jpg"
        image.save(paths[id_], **options)
    return paths


def _record(id_: str, phash: int, sha256: str | None = None, error: str | None = None) -> ImageRecord:
    """A record made by hand, so a test can choose the hashes."""
    return ImageRecord(id_, Path(f"{id_}.jpg"), 100, sha256 or f"digest-{id_}", 10, 10, phash, error)


def test_identical_groups_finds_byte_identical_posters(posters):
    """Check that a byte-identical copy under another id is grouped, and re-encoded copies are not."""
    records = scan_images(posters, progress=False)
    assert identical_groups(records) == [["tt0000000", "tt0000100"]]


def test_identical_groups_are_sorted():
    """Check that groups and their members come sorted, whatever the record order."""
    records = [_record("c", 1, "x"), _record("b", 2, "y"), _record("a", 3, "x"), _record("d", 4, "y")]
    assert identical_groups(records) == [["a", "c"], ["b", "d"]]


def test_identical_groups_skip_undecodable_files():
    """Check that two empty (or equally broken) files are not reported as the same poster."""
    records = [_record("a", 0, "empty", error="empty file (0 bytes)"), _record("b", 0, "empty", error="empty")]
    assert identical_groups(records) == []


def test_near_duplicates_find_reencoded_and_resized_copies(posters):
    """Check that a copy at another JPEG quality and slightly smaller or larger copies are paired with the source."""
    records = scan_images(posters, progress=False)
    pairs = near_duplicate_pairs(records)
    linked = {(a, b) for a, b, _ in pairs}
    for copy in ("tt0000101", "tt0000102", "tt0000103"):
        assert ("tt0000001", copy) in linked
    assert all(a < b and 0 <= d <= NEAR_DUPLICATE_MAX_DISTANCE for a, b, d in pairs)
    assert pairs == sorted(pairs)


def test_near_duplicates_leave_out_identical_and_unrelated(posters):
    """Check that byte-identical files are not near pairs, and no two unrelated posters are paired."""
    records = scan_images(posters, progress=False)
    family = {"tt0000001", "tt0000101", "tt0000102", "tt0000103"}
    pairs = near_duplicate_pairs(records)
    assert {a for a, b, _ in pairs} | {b for a, b, _ in pairs} == family
    # The unrelated posters are far apart, not just over the line.
    unrelated = [r for r in records if r.id < "tt0000100"]
    hashes = np.array([r.phash for r in unrelated], dtype=np.uint64)
    distances = phash_distances(hashes, hashes) + np.eye(len(hashes), dtype=np.uint8) * 64
    assert distances.min() > 2 * NEAR_DUPLICATE_MAX_DISTANCE


def test_near_duplicates_from_hand_made_hashes():
    """Check the distance threshold exactly: 4 differing bits pair, 5 do not."""
    records = [_record("a", 0), _record("b", 0b1111), _record("c", 0b11111 << 10), _record("err", 0, error="bad")]
    assert near_duplicate_pairs(records) == [("a", "b", 4)]
    assert near_duplicate_pairs([_record("b", 0), _record("a", 0b1)]) == [("a", "b", 1)]  # smaller id first
    assert near_duplicate_pairs(records, max_distance=5) == [("a", "b", 4), ("a", "c", 5)]
    assert near_duplicate_pairs([]) == []


@pytest.mark.parametrize("max_distance", [0, 1, 4, 9, 16])
def test_candidate_pairs_find_every_pair_that_all_pairs_find(max_distance):
    """Check the multi-index search misses no pair within the distance that comparing every pair finds."""
    from postergenre.data.duplicates import candidate_pairs, phash_distances_of_pairs

    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    # Near copies of each base hash: k random bits flipped, k from 0 to 12.
    flips = [
        np.uint64(sum(1 << int(b) for b in rng.choice(64, size=k, replace=False))) for k in rng.integers(0, 13, 200)
    ]
    hashes = np.concatenate([base, base[rng.integers(0, 40, 200)] ^ np.array(flips, dtype=np.uint64)])
    everything = phash_distances(hashes, hashes)
    close = {(i, j) for i, j in zip(*np.nonzero(everything <= max_distance), strict=True) if i < j}
    first, second = candidate_pairs(hashes, max_distance)
    assert (first < second).all()
    found = {
        (i, j)
        for i, j, d in zip(first, second, phash_distances_of_pairs(hashes, first, second), strict=True)
        if d <= max_distance
    }
    assert found == close and len(close) > 0


def test_poster_groups_unions_identical_and_near(posters):
    """Check that poster_groups gives identical and near-identical posters one key, and others their own."""
    records = scan_images(posters, progress=False)
    groups = poster_groups(list(posters), records)
    assert set(groups) == set(posters)
    assert groups["tt0000000"] == groups["tt0000100"] == "tt0000000"
    assert {groups[i] for i in ("tt0000001", "tt0000101", "tt0000102", "tt0000103")} == {"tt0000001"}
    singles = [i for i in posters if i not in ("tt0000000", "tt0000100", "tt0000001") and i < "tt0000100"]
    assert all(groups[i] == i for i in singles)


def test_poster_groups_without_near_duplicates(posters):
    """Check that near=False groups byte-identical posters only."""
    groups = poster_groups(list(posters), scan_images(posters, progress=False), near=False)
    assert groups["tt0000100"] == "tt0000000"
    assert groups["tt0000101"] == "tt0000101"


def test_poster_groups_ids_without_records_keep_their_own_key():
    """Check that an id the scan did not see is its own group."""
    groups = poster_groups(["a", "b", "z"], [_record("a", 0, "x"), _record("b", 0, "x")])
    assert groups == {"a": "a", "b": "a", "z": "z"}


def test_poster_groups_link_through_posters_outside_ids():
    """Check that two ids matching the same unlabelled poster share a group although they differ by 8 bits."""
    records = [_record("a", 0), _record("unlabelled", 0b1111), _record("b", 0b11111111)]
    assert poster_groups(["a", "b"], records) == {"a": "a", "b": "a"}


def test_poster_groups_chains_are_transitive():
    """Check that a chain a-b (identical), b-c (near), c-d (near) ends in one group keyed by the smallest id."""
    records = [_record("d", 0b11), _record("c", 0b1, "y"), _record("b", 0, "x"), _record("a", 0, "x")]
    assert poster_groups(["d", "c", "b", "a"], records) == {"a": "a", "b": "a", "c": "a", "d": "a"}
