"""Posters that are the same picture under different ids.

Byte-identical files are found by their SHA-256 digest; near-identical ones (re-encoded,
resized) by a perceptual hash within a small Hamming distance. Identical posters must stay on one
side of a split, or a test poster has been seen in training.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from postergenre.data.images import ImageRecord, phash_distances

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
    records: list[ImageRecord], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE, chunk: int = 2048
) -> list[tuple[str, str, int]]:
    """Pairs of ids whose posters look the same but are not byte-identical, with their distance.

    Each pair is ``(smaller id, larger id, distance)``, and the list is sorted.
    """
    usable = [r for r in records if r.error is None]
    hashes = np.array([r.phash for r in usable], dtype=np.uint64)
    digests = [r.sha256 for r in usable]
    pairs = []
    for start in range(0, len(usable), chunk):
        distances = phash_distances(hashes[start : start + chunk], hashes)
        rows, cols = np.nonzero(distances <= max_distance)
        for r, c in zip(rows + start, cols, strict=True):
            if r < c and digests[r] != digests[c]:
                a, b = sorted((usable[r].id, usable[c].id))
                pairs.append((a, b, int(distances[r - start, c])))
    return sorted(pairs)


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
