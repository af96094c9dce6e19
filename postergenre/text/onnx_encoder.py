"""The sentence model (MiniLM, a 6-layer BERT) through ONNX Runtime, with the ``tokenizers`` library.

sentence-transformers computes an embedding as: tokenise (truncated to ``max_seq_length``), run
the transformer, average its last hidden states over the real tokens (mean pooling), scale to
unit length. This does the same with a transformer exported once to ONNX and checked against
sentence-transformers at export, so that predicting needs neither that library (about 5 s to
import) nor torch. The export lives in the cache folder, named after the model package's version.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

OPSET = 17
# Largest |ONNX - sentence-transformers| accepted on the check sentences (unit vectors); measured ~1e-7.
PARITY_TOLERANCE = 1e-4
CHECK_TEXTS = ("A NIGHTMARE ON ELM STREET", "the funniest comedy of the year", "x")


class OnnxSentenceEncoder:
    """``encode(texts) -> (N, 384)`` unit-length float32 embeddings, as sentence-transformers gives them."""

    def __init__(self, session, tokenizer):
        self.session, self.tokenizer = session, tokenizer

    @classmethod
    def load(cls, model_folder: Path, version: str, cache_dir: Path | None = None) -> OnnxSentenceEncoder:
        """The encoder of the model in ``model_folder``, exporting it first if the cache lacks it."""
        from postergenre.cache import cache_root
        from postergenre.features.onnx_export import onnx_session

        path = Path(cache_dir or cache_root()) / "onnx" / f"minilm-{version}.onnx"
        if not path.is_file():
            export_encoder(model_folder, path)
        return cls(onnx_session(path, threads=1), load_tokenizer(model_folder))

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings of ``texts``, in their order.

        Texts are batched shortest first: a batch is padded to its longest text, and poster texts
        run from one word to a hundred tokens, so batches of similar lengths did the same work in
        8.7 s where the given order took 20.0 s (2,000 poster texts; the same embeddings).
        """
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        chunks = [
            self._encode_batch([texts[k] for k in order[start : start + batch_size]])
            for start in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, 384), np.float32)
        embeddings = np.empty((len(texts), chunks[0].shape[1]), np.float32)
        embeddings[order] = np.concatenate(chunks)
        return embeddings

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], np.int64)
        mask = np.array([e.attention_mask for e in encodings], np.int64)
        (hidden,) = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        return mean_pool_normalised(hidden, mask)


def mean_pool_normalised(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the (B, T, D) hidden states over the real tokens, scaled to unit length, float32."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return (pooled / norms).astype(np.float32)


def load_tokenizer(model_folder: Path):
    """The model's own fast tokenizer, truncating and padding as sentence-transformers does."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
    max_length = json.loads((model_folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of the batch
    return tokenizer


def export_encoder(model_folder: Path, path: Path) -> Path:
    """Export the transformer (token ids in, last hidden states out; dynamic batch and length) to
    ``path`` and check the pooled result against sentence-transformers before moving it in place."""
    import torch

    from postergenre.text.embed import load_sentence_transformer

    reference = load_sentence_transformer()
    transformer = reference[0].auto_model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    logger.info("exporting the sentence model to ONNX (once): %s", path)
    example = load_tokenizer(model_folder).encode_batch(list(CHECK_TEXTS))
    ids = torch.tensor([e.ids for e in example])
    inputs = (ids, torch.tensor([e.attention_mask for e in example]), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    try:
        # TODO: the TorchScript exporter is deprecated since torch 2.9 (see features.onnx_export).
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _last_hidden_state(transformer),
                inputs,
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
            )
        _check_parity(tmp, model_folder, reference)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_parity(path: Path, model_folder: Path, reference) -> None:
    from postergenre.features.onnx_export import onnx_session

    encoder = OnnxSentenceEncoder(onnx_session(path, threads=1), load_tokenizer(model_folder))
    texts = list(CHECK_TEXTS)
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    gap = float(np.abs(encoder.encode(texts) - expected).max())
    if gap > PARITY_TOLERANCE:
        raise PosterGenreError(f"the ONNX export of the sentence model differs from it by {gap:.2e}; not used")
    logger.info("sentence model ONNX export matches sentence-transformers within %.1e", gap)


def _last_hidden_state(transformer):
    """The transformer as a module of positional inputs and one output, as the exporter wants it."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.transformer(**inputs).last_hidden_state

    return LastHiddenState().eval()
