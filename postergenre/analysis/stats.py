"""The numbers of a data analysis: pure functions of a dataset and its image scan.

Everything here returns plain ``int``/``float``/``str``/``list``/``dict`` values so that the
result can be written as JSON unchanged; the plots and the HTML report read the same dict.

Label statistics (genre counts, labels per poster, co-occurrence) count CSV rows, as the
dataset's own documentation does: a duplicate row counts twice. They differ from counts over
unique ids only by the few duplicate rows, which are reported beside them.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pandas as pd

from postergenre.data.dataset import PosterDataset
from postergenre.data.duplicates import identical_groups, near_duplicate_pairs
from postergenre.data.genres import DEFAULT_MIN_POSITIVES, select_genres
from postergenre.data.images import ImageRecord
from postergenre.errors import DataError

# Lists of ids in the JSON are cut to this many; their full length is given beside them.
MAX_LISTED_IDS = 20
TOP_PAIRS = 15
TOP_SIZES = 10
SAMPLE_POSTERS = 24
# Telling words: how many per genre, and the fewest posters with text a genre needs before its
# words are more than the quirks of a few posters (it is listed, and flagged, below that).
TOP_WORDS = 8
MIN_TEXT_POSTERS = 10


def analyze_dataset(
    dataset: PosterDataset,
    records: list[ImageRecord],
    *,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    n_samples: int = SAMPLE_POSTERS,
    seed: int = 0,
    ocr: dict | None = None,
) -> dict:
    """All the numbers of the analysis, as a JSON-able dict.

    Args:
        dataset: the loaded dataset, after undecodable labelled posters were dropped.
        records: the scan of every poster file, labelled and unlabelled.
        min_positives: the genre selection's minimum, to report which genres it would leave out.
        n_samples: how many labelled posters to pick for the sample grid.
        seed: the seed of that pick.
        ocr: the text lines of the labelled posters, ``{id: [TextLine, ...]}`` as
            :func:`postergenre.text.ocr.ocr_posters` gives them, for the telling words of each
            genre (``telling_words``); None leaves that entry None.
    """
    row_labels = dataset.row_labels
    groups = identical_groups(records)
    pairs = near_identical_pairs(records)
    return {
        "dataset": {"csv": str(dataset.csv_path), "images": str(dataset.images_dir)},
        **dataset_counts(dataset, records),
        "genres": list(dataset.genres),
        "label_basis": "csv rows",
        "genre_counts": genre_counts(row_labels),
        "labels_per_poster": labels_per_poster(row_labels),
        "top_genre_pairs": top_genre_pairs(row_labels),
        "cooccurrence": cooccurrence(row_labels),
        "genres_left_out": genres_left_out(dataset.labels, min_positives),
        "image_sizes": image_size_stats(records),
        "identical_poster_groups": groups,
        "near_identical_pairs": pairs,
        "duplicate_poster_genres": genres_of(dataset.labels, [*_flat(groups), *_flat(p[:2] for p in pairs)]),
        "undecodable_posters": undecodable_posters(records, dataset),
        "sample_posters": sample_posters(dataset, n_samples, seed),
        "telling_words": telling_words_stats(dataset, ocr) if ocr is not None else None,
        "warnings": list(dataset.warnings),
    }


def dataset_counts(dataset: PosterDataset, records: list[ImageRecord]) -> dict:
    """Rows, ids, poster files and the ones that do not match up."""
    unlabelled = sorted(dataset.unlabelled_images)
    return {
        "rows": int(dataset.n_rows),
        "unique_ids": len(dataset.labels),
        "images": len(records),
        "images_without_labels": {"count": len(unlabelled), "first_ids": unlabelled[:MAX_LISTED_IDS]},
        "labelled_ids_without_usable_poster": {
            "count": len(dataset.missing_images),
            "first_ids": sorted(dataset.missing_images)[:MAX_LISTED_IDS],
        },
        "duplicate_rows": int(dataset.duplicate_rows),
        "duplicate_ids": list(dataset.duplicate_ids),
    }


def genre_counts(row_labels: pd.DataFrame) -> dict[str, int]:
    """Positives per genre, most frequent first (ties in the CSV's order)."""
    counts = row_labels.sum()
    order = sorted(range(len(counts)), key=lambda k: -counts.iloc[k])
    return {str(counts.index[k]): int(counts.iloc[k]) for k in order}


def labels_per_poster(row_labels: pd.DataFrame) -> dict[str, int]:
    """How many rows carry 0, 1, 2, ... genres (keys are strings, for JSON)."""
    histogram = Counter(row_labels.sum(axis=1).astype(int).tolist())
    return {str(n): histogram[n] for n in sorted(histogram)}


def cooccurrence(row_labels: pd.DataFrame) -> list[list[int]]:
    """Rows marked with both genres, for every pair, in the CSV's genre order; the diagonal is the genre count."""
    matrix = row_labels.to_numpy(dtype=np.int64)
    return (matrix.T @ matrix).tolist()


def top_genre_pairs(row_labels: pd.DataFrame, top: int = TOP_PAIRS) -> list[dict]:
    """The ``top`` most frequent pairs of genres on one poster, with their counts."""
    genres = list(row_labels.columns)
    matrix = np.array(cooccurrence(row_labels))
    rows, cols = np.triu_indices(len(genres), k=1)
    pairs = [(int(matrix[r, c]), genres[r], genres[c]) for r, c in zip(rows, cols, strict=True) if matrix[r, c] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"genres": [a, b], "count": n} for n, a, b in pairs[:top]]


def genres_left_out(labels: pd.DataFrame, min_positives: int = DEFAULT_MIN_POSITIVES) -> dict:
    """What ``select_genres`` would keep and leave out of training, with the reasons.

    Counts unique ids, as training does. Where no genre is kept at all, the selection's error
    becomes ``error`` here: an analysis should still describe such a dataset.
    """
    try:
        selection = select_genres(labels, min_positives)
    except DataError as exc:
        not_genres = select_genres(labels, 0).dropped
        counts = labels.sum()
        dropped = {
            g: not_genres.get(g, f"{int(counts[g])} positives, fewer than the minimum of {min_positives}")
            for g in labels.columns
        }
        return {"min_positives": min_positives, "kept": [], "dropped": dropped, "error": str(exc)}
    return {"min_positives": min_positives, "kept": selection.kept, "dropped": selection.dropped}


def image_size_stats(records: list[ImageRecord], top: int = TOP_SIZES) -> dict:
    """Width, height and aspect ratio (height / width) of the decodable posters, and their bytes."""
    usable = [r for r in records if r.error is None]
    sizes = Counter((r.width, r.height) for r in usable)
    stats = {
        "decodable": len(usable),
        "total_bytes": int(sum(r.n_bytes for r in records)),
        "most_common": [{"width": w, "height": h, "count": n} for (w, h), n in sizes.most_common(top)],
        # Every distinct size with its count: enough to redraw the size plots without the scan.
        "all_sizes": [[w, h, n] for (w, h), n in sorted(sizes.items())],
    }
    if usable:
        widths = np.array([r.width for r in usable])
        heights = np.array([r.height for r in usable])
        stats["width"] = _summary(widths)
        stats["height"] = _summary(heights)
        stats["aspect_ratio"] = _summary(heights / widths, digits=3)
    return stats


def _summary(values: np.ndarray, digits: int | None = None) -> dict:
    def number(x):
        return round(float(x), digits) if digits is not None else _plain(x)

    return {"min": number(values.min()), "median": number(np.median(values)), "max": number(values.max())}


def _plain(x) -> int | float:
    # A median of integers can fall halfway between two; keep whole numbers as int in the JSON.
    x = float(x)
    return int(x) if x.is_integer() else x


def near_identical_pairs(records: list[ImageRecord]) -> list[list]:
    """``[id, id, hamming distance]`` for posters that look the same but differ in bytes."""
    pairs = [[*sorted((a, b)), d] for a, b, d in near_duplicate_pairs(records)]
    return sorted(pairs)


def genres_of(labels: pd.DataFrame, ids) -> dict[str, list[str] | None]:
    """The genres of each id, or None for an id without a CSV row."""
    genres = list(labels.columns)
    known = set(labels.index)
    return {
        i: [g for g, v in zip(genres, labels.loc[i], strict=True) if v] if i in known else None
        for i in dict.fromkeys(ids)
    }


def _flat(groups) -> list[str]:
    return [i for group in groups for i in group]


def undecodable_posters(records: list[ImageRecord], dataset: PosterDataset) -> list[dict]:
    """Poster files that did not decode, with the reason and whether they have labels."""
    return [
        {"id": r.id, "path": str(r.path), "error": r.error, "labelled": r.id in dataset.labels.index}
        for r in sorted(records, key=lambda r: r.id)
        if r.error is not None
    ]


def sample_posters(dataset: PosterDataset, n: int = SAMPLE_POSTERS, seed: int = 0) -> list[dict]:
    """A reproducible random pick of labelled posters, with their genres, in id order."""
    ids = dataset.ids
    picked = sorted(random.Random(seed).sample(ids, min(n, len(ids))))
    return [{"id": i, "genres": genres} for i, genres in genres_of(dataset.labels, picked).items()]


def telling_words_stats(
    dataset: PosterDataset, ocr: dict, *, top: int = TOP_WORDS, min_text_posters: int = MIN_TEXT_POSTERS
) -> dict:
    """The words most typical of each genre's posters, with the poster counts behind them.

    Counts unique labelled ids that have OCR results, in the dataset's genre order. Per genre:
    ``posters`` (read), ``posters_with_text`` (at least one line at or above the confidence floor)
    and ``words``, each ``{"word", "score", "posters", "all_posters"}`` as
    :func:`postergenre.text.words.telling_word_counts` gives them. A genre with fewer than
    ``min_text_posters`` posters showing text gets a warning: its words are anecdotes.
    ``words_counted`` is how many words are on enough posters to be scored at all.
    """
    from postergenre.text import words as telling

    floor = {
        "min_confidence": telling.MIN_CONFIDENCE,
        "min_posters": telling.MIN_POSTERS,
        "prior_strength": telling.PRIOR_STRENGTH,
    }
    ids = [i for i in dataset.ids if i in ocr]
    labels = dataset.labels.loc[ids]
    vocabulary, presence = telling.word_presence(
        ocr, ids, min_confidence=floor["min_confidence"], min_posters=floor["min_posters"]
    )
    words = telling.score_words(vocabulary, presence, labels, top, prior_strength=floor["prior_strength"])
    with_text = np.array([any(line.confidence >= floor["min_confidence"] for line in ocr[i]) for i in ids], bool)
    n_counted = len(vocabulary)
    genres, warnings = {}, []
    if not n_counted:
        warnings.append(
            f"no word is on {floor['min_posters']} posters or more (of {int(with_text.sum())} with text), so no genre "
            "has telling words: they need more posters"
        )
    for genre in dataset.genres:
        member = labels[genre].to_numpy(bool)
        n_text = int((member & with_text).sum())
        genres[genre] = {"posters": int(member.sum()), "posters_with_text": n_text, "words": words[genre]}
        if n_text < min_text_posters:
            warnings.append(
                f"{genre}: {n_text} posters with text (fewer than {min_text_posters}); its words say little"
            )
    return {
        "method": "log-odds ratio z-score, informative Dirichlet prior (Monroe et al. 2008)",
        "settings": {"top": top, **floor, "min_text_posters": min_text_posters},
        "posters_read": len(ids),
        "posters_with_text": int(with_text.sum()),
        "words_counted": n_counted,
        "genres": genres,
        "warnings": warnings,
    }
