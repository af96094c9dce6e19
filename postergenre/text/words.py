"""Which words on posters tell a genre apart: log-odds ratios with an informative Dirichlet prior.

For each genre the posters with it are compared with those without it, counting each word once per
poster. The score is the z-score of the log-odds ratio with a prior proportional to each word's
overall frequency (Monroe, Colaresi & Quinn 2008, "Fightin' Words", section 3.5): the prior
shrinks rare words towards no difference, so a word seen on two posters does not top the list
just because both were horror films.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from postergenre.text.ocr import TextLine

_WORD = re.compile(r"[a-z]+")
# The defaults of telling_words: OCR lines below this confidence are mostly misread texture; a
# word on fewer posters than this is a name or a typo; the prior's total pseudo-count.
MIN_CONFIDENCE = 0.5
MIN_POSTERS = 3
PRIOR_STRENGTH = 100.0


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def poster_words(lines: Sequence[TextLine], *, min_confidence: float = 0.5, stop_words=frozenset()) -> set[str]:
    """Lower-case words of three letters or more on a poster, stop words left out."""
    text = " ".join(line.text for line in lines if line.confidence >= min_confidence).lower()
    return {word for word in _WORD.findall(text) if len(word) >= 3 and word not in stop_words}


def word_presence(
    ocr: dict[str, list[TextLine]],
    ids: list[str],
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_posters: int = MIN_POSTERS,
) -> tuple[list[str], np.ndarray]:
    """``(vocabulary, matrix)``: the words on at least ``min_posters`` of these posters (those
    :func:`telling_words` can score), and a posters x words 0/1 matrix, rows in ``ids`` order."""
    stop_words = _stop_words()
    words = [poster_words(ocr[id_], min_confidence=min_confidence, stop_words=stop_words) for id_ in ids]
    counts = Counter(word for found in words for word in found)
    vocabulary = sorted(word for word, count in counts.items() if count >= min_posters)
    column = {word: k for k, word in enumerate(vocabulary)}
    matrix = np.zeros((len(ids), len(vocabulary)), np.float64)
    for row, found in enumerate(words):
        matrix[row, [column[word] for word in found if word in column]] = 1.0
    return vocabulary, matrix


def log_odds_z(in_counts: np.ndarray, out_counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """z-scores of the log-odds ratio of each word between two corpora, given Dirichlet ``prior`` counts."""
    a0 = prior.sum()
    n_in, n_out = in_counts.sum(), out_counts.sum()
    log_odds_in = np.log(in_counts + prior) - np.log(n_in + a0 - in_counts - prior)
    log_odds_out = np.log(out_counts + prior) - np.log(n_out + a0 - out_counts - prior)
    variance = 1.0 / (in_counts + prior) + 1.0 / (out_counts + prior)
    return (log_odds_in - log_odds_out) / np.sqrt(variance)


def telling_words(
    ocr: dict[str, list[TextLine]],
    labels: pd.DataFrame,
    top: int = 10,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_posters: int = MIN_POSTERS,
    prior_strength: float = PRIOR_STRENGTH,
) -> dict[str, list[tuple[str, float]]]:
    """``{genre: [(word, z-score), ...]}``: up to ``top`` words most typical of each genre's posters.

    ``labels`` has one 0/1 column per genre, indexed by poster id; only ids also in ``ocr`` count.
    Words need three letters or more, must not be English stop words, and must appear on at least
    ``min_posters`` posters. ``prior_strength`` is the total pseudo-count of the prior.
    """
    table = telling_word_counts(
        ocr, labels, top, min_confidence=min_confidence, min_posters=min_posters, prior_strength=prior_strength
    )
    return {genre: [(entry["word"], entry["score"]) for entry in entries] for genre, entries in table.items()}


def telling_word_counts(
    ocr: dict[str, list[TextLine]],
    labels: pd.DataFrame,
    top: int = 10,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_posters: int = MIN_POSTERS,
    prior_strength: float = PRIOR_STRENGTH,
) -> dict[str, list[dict]]:
    """Like :func:`telling_words`, with the poster counts behind each score.

    Returns ``{genre: [{"word", "score", "posters", "all_posters"}, ...]}``: ``posters`` counts the
    genre's posters showing the word, ``all_posters`` every poster (of any genre) showing it.
    """
    ids = [id_ for id_ in labels.index if id_ in ocr]
    vocabulary, presence = word_presence(ocr, ids, min_confidence=min_confidence, min_posters=min_posters)
    return score_words(vocabulary, presence, labels.loc[ids], top, prior_strength=prior_strength)


def score_words(
    vocabulary: list[str],
    presence: np.ndarray,
    labels: pd.DataFrame,
    top: int = 10,
    *,
    prior_strength: float = PRIOR_STRENGTH,
) -> dict[str, list[dict]]:
    """:func:`telling_word_counts` from a :func:`word_presence` result; ``labels`` rows align with its rows."""
    if not vocabulary:
        return {genre: [] for genre in labels.columns}
    targets = labels.to_numpy(np.float64)
    in_counts = targets.T @ presence  # genres x words: posters of the genre showing the word
    totals = presence.sum(axis=0)
    prior = prior_strength * totals / totals.sum()
    result = {}
    for k, genre in enumerate(labels.columns):
        scores = log_odds_z(in_counts[k], totals - in_counts[k], prior)
        best = [j for j in np.argsort(-scores, kind="stable")[:top] if scores[j] > 0 and in_counts[k, j] > 0]
        result[genre] = [
            {
                "word": vocabulary[j],
                "score": round(float(scores[j]), 3),
                "posters": int(in_counts[k, j]),
                "all_posters": int(totals[j]),
            }
            for j in best
        ]
    return result
