"""Posters that are the same picture under different ids.

Byte-identical files are found by their SHA-256 digest; near-identical ones (re-encoded,
resized) by a perceptual hash within a small Hamming distance. Identical posters must stay on one
side of a split, or a test poster has been seen in training.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np

from postergenre.data.images import ImageRecord

# Hamming distance between 64-bit pHashes at or below which two posters count as the same
# picture. 0–4 are re-encodings and small resizes; above ~8 unrelated posters with similar
# layouts start to match.
NEAR_DUPLICATE_MAX_DISTANCE = 4


def identical_groups(records: list[ImageRecord]) -> list[list[str]]:
    """Groups of two or more ids whose files are byte-identical, sorted.

    Files that do not decode are left out: two empty or truncated files are not the same poster.
    """
    by_digest = defaultdict(list)
    for record in records:
        if record.error is None:
            by_digest[record.sha256].append(record.id)
    return sorted(sorted(ids) for ids in by_digest.values() if len(ids) > 1)


def near_duplicate_pairs(
    records: list[ImageRecord], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
) -> list[tuple[str, str, int]]:
    """Pairs of ids whose posters look the same but are not byte-identical, with their distance.

    Each pair is ``(smaller id, larger id, distance)``, and the list is sorted.
    """
    usable = [r for r in records if r.error is None]
    hashes = np.array([r.phash for r in usable], dtype=np.uint64)
    digests = [r.sha256 for r in usable]
    first, second = candidate_pairs(hashes, max_distance)
    distances = phash_distances_of_pairs(hashes, first, second)
    pairs = []
    for r, c, distance in zip(first, second, distances, strict=True):
        if distance <= max_distance and digests[r] != digests[c]:
            a, b = sorted((usable[r].id, usable[c].id))
            pairs.append((a, b, int(distance)))
    return sorted(pairs)


def candidate_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i < j)`` that include every pair of 64-bit hashes within ``max_distance`` bits.

    Multi-index hashing: cut the hashes into ``max_distance + 1`` bit ranges; two hashes that differ
    in at most ``max_distance`` bits agree exactly on at least one range, so only hashes sharing a
    range's value need comparing. For 7k posters that is a few thousand comparisons instead of 26
    million (1.9 s of every train that made a split). Beyond 15 bits the ranges get too short to
    bucket well, and every pair is a candidate.
    """
    n = len(hashes)
    if max_distance >= 16:
        first, second = np.triu_indices(n, k=1)
        return first, second
    bounds = np.linspace(0, 64, max_distance + 2).astype(np.uint64)
    found = []
    for low, high in itertools.pairwise(bounds):
        keys = (hashes >> low) & (np.uint64(0xFFFF_FFFF_FFFF_FFFF) >> (np.uint64(64) - (high - low)))
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = np.sort(order[start : start + size])
            i, j = np.triu_indices(size, k=1)
            found.append(members[i] * n + members[j])
    codes = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return codes // n, codes % n


def phash_distances_of_pairs(hashes: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Hamming distances between ``hashes[first[k]]`` and ``hashes[second[k]]``."""
    return np.bitwise_count(hashes[first] ^ hashes[second])


def poster_groups(ids: list[str], records: list[ImageRecord], *, near: bool = True) -> dict[str, str]:
    """A group key for every id: ids whose posters are identical (or near-identical) share one.

    Ids without a record keep themselves as their key. Records of ids not in ``ids`` (posters without
    labels, say) still link: if A and B both match such a poster, A and B share a group.
    """
    parent = {i: i for i in ids}
    parent.update((r.id, r.id) for r in records if r.id not in parent)

    def find(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)

    for group in identical_groups(records):
        for other in group[1:]:
            union(group[0], other)
    if near:
        for a, b, _ in near_duplicate_pairs(records):
            union(a, b)
    return {i: find(i) for i in ids}
