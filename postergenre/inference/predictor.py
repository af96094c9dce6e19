"""Predicting genres for posters with a saved run, without torch.

A run folder holds everything a prediction needs: ``model.json`` (genres, thresholds,
preprocessing, head shape), ``model.safetensors`` (the head's weights, standardisation and prior
correction) and ``backbone.onnx`` (the frozen backbone). The backbone runs in ONNX Runtime and the
head in NumPy, so ``postergenre predict`` starts in well under a second: importing torch alone
would take longer than scoring a poster.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
BACKBONE_ONNX = "backbone.onnx"
DEFAULT_BATCH_SIZE = 16


@dataclass
class SavedModel:
    """A trained head as NumPy arrays, with its description from ``model.json``."""

    info: dict
    tensors: dict[str, np.ndarray]

    @classmethod
    def load(cls, run_dir: str | Path) -> SavedModel:
        from safetensors.numpy import load_file

        run_dir = Path(run_dir)
        info_path, weights_path = run_dir / MODEL_JSON, run_dir / MODEL_WEIGHTS
        for path in (info_path, weights_path):
            if not path.is_file():
                raise PosterGenreError(
                    f"{path}: not found; {run_dir} is not a finished run folder "
                    "(train one with postergenre train --out)"
                )
        try:
            info = json.loads(info_path.read_text())
            tensors = load_file(str(weights_path))
        except (ValueError, OSError) as exc:
            raise PosterGenreError(f"{run_dir}: cannot read the saved model ({exc}); train the run again") from exc
        return cls(info, tensors)

    @property
    def genres(self) -> list[str]:
        return list(self.info["genres"])

    @property
    def thresholds(self) -> np.ndarray:
        return np.asarray(self.info["thresholds"], dtype=np.float64)

    @property
    def train_prevalence(self) -> np.ndarray:
        return np.asarray(self.info["train_prevalence"], dtype=np.float64)

    def preprocessing(self):
        from postergenre.models.preprocessing import Preprocessing

        return Preprocessing.from_dict(self.info["preprocessing"])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, G) logits for raw pooled features (N, D): the same arithmetic as the torch heads."""
        return head_logits(self.info["head"]["type"], self.tensors, features)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(features))


def head_logits(head_type: str, tensors: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Run a saved head (see :mod:`postergenre.training.heads`) in NumPy."""
    x = (np.asarray(features, dtype=np.float32) - tensors["feature_mean"]) / tensors["feature_std"]
    if head_type == "linear":
        out = x @ tensors["fc.weight"].T + tensors["fc.bias"]
    elif head_type == "mlp":
        h = np.maximum(x @ tensors["hidden.weight"].T + tensors["hidden.bias"], 0)
        out = h @ tensors["fc.weight"].T + tensors["fc.bias"]
    elif head_type == "per_genre_mlp":
        n_genres, hidden = tensors["fc_weight"].shape
        h = np.maximum(x @ tensors["hidden.weight"].T + tensors["hidden.bias"], 0).reshape(len(x), n_genres, hidden)
        out = (h * tensors["fc_weight"]).sum(-1) + tensors["fc_bias"]
    else:
        raise PosterGenreError(f"unknown head type {head_type!r} in model.json; this postergenre is too old for it")
    return out + tensors["logit_offset"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so that exp never overflows.
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1 / (1 + np.exp(-x[positive]))
    z = np.exp(x[~positive])
    out[~positive] = z / (1 + z)
    return out


@dataclass
class Scores:
    """Scored images: their paths, probabilities (N, G), predicted genres, and the unreadable ones."""

    paths: list[str]
    probabilities: np.ndarray
    predicted: list[list[str]]
    failed: dict[str, str]


class Predictor:
    """Genre probabilities and decisions for poster images, from a run folder.

    >>> predictor = Predictor.load("runs/lite0")          # doctest: +SKIP
    >>> predictor.predict_images(["poster.jpg"])          # doctest: +SKIP
    """

    def __init__(self, model: SavedModel, session, run_dir: Path):
        self.model, self.session, self.run_dir = model, session, run_dir
        self.preprocessing = model.preprocessing()
        self.flip = bool(model.info.get("flip", False))
        self.input_name = session.get_inputs()[0].name
        batch_dim = session.get_inputs()[0].shape[0]
        # An export with a fixed batch dimension can only take that many images at once.
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    @classmethod
    def load(cls, run_dir: str | Path, *, threads: int | None = None) -> Predictor:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise PosterGenreError(f"{run_dir}: run folder not found; pass the --out folder of postergenre train")
        model = SavedModel.load(run_dir)
        onnx_path = run_dir / BACKBONE_ONNX
        if not onnx_path.is_file():
            raise PosterGenreError(f"{onnx_path}: not found; the run is incomplete, train it again")
        return cls(model, open_session(onnx_path, threads), run_dir)

    @property
    def genres(self) -> list[str]:
        return self.model.genres

    @property
    def thresholds(self) -> np.ndarray:
        return self.model.thresholds

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled features for a normalised NCHW batch, averaged with the mirror image if the model was."""
        features = self._run_backbone(batch)
        if self.flip:
            features = (features + self._run_backbone(batch[..., ::-1])) / 2
        return features

    def _run_backbone(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch or len(batch)
        parts = [self.session.run(None, {self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        return np.concatenate(parts).reshape(len(batch), -1)

    def predict_images(self, paths, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False):
        """Probabilities per genre for each readable image, in the order given.

        Returns a DataFrame indexed by path (as given) with one probability column per genre and a
        ``predicted`` column listing the genres at or above their thresholds. Images that cannot
        be read are logged, skipped and listed in ``frame.attrs["failed"]`` ({path: reason}).
        """
        import pandas as pd

        result = self.score_paths(paths, batch_size=batch_size, progress=progress)
        frame = pd.DataFrame(result.probabilities, index=pd.Index(result.paths, name="image"), columns=self.genres)
        frame["predicted"] = result.predicted
        frame.attrs["failed"] = result.failed
        return frame

    def score_paths(self, paths, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> Scores:
        """Like :meth:`predict_images`, as plain arrays: the command line skips importing pandas."""
        paths = [str(p) for p in paths]
        scored, probabilities, failed = [], [], {}
        bar = _progress_bar(len(paths), progress)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            names, batch = self._load_batch(chunk, failed)
            if names:
                probabilities.append(self.model.probabilities(self.features(batch)))
                scored.extend(names)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        values = np.concatenate(probabilities) if probabilities else np.zeros((0, len(self.genres)))
        genres = np.asarray(self.genres)
        predicted = [list(genres[row >= self.thresholds]) for row in values]
        return Scores(scored, values, predicted, failed)

    def _load_batch(self, paths: list[str], failed: dict[str, str]) -> tuple[list[str], np.ndarray]:
        from postergenre.data.images import ImageError
        from postergenre.features.extract import load_input

        names, arrays = [], []
        for path in paths:
            try:
                # The same decoding as feature extraction, so a poster scores as it did in evaluation.
                arrays.append(load_input(path, self.preprocessing))
            except ImageError as exc:
                failed[path] = str(exc)
                logger.warning("skipped: %s", exc)
                continue
            names.append(path)
        return names, np.stack(arrays) if arrays else np.zeros((0,))


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    # The plain tqdm: tqdm.auto's notebook detection costs a tenth of a second at start-up.
    from tqdm import tqdm

    return tqdm(total=total, desc="scoring posters", unit="img")


def open_session(onnx_path: Path, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise PosterGenreError("onnxruntime is not installed; pip install onnxruntime") from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own untyped errors for a broken file
        raise PosterGenreError(f"{onnx_path}: cannot load the backbone ({exc}); train the run again") from exc
