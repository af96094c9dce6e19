"""Predicting genres for posters with a saved run, without torch.

A run folder holds everything a prediction needs: ``model.json`` (genres, thresholds,
preprocessing, head shape), ``model.safetensors`` (the head's weights, standardisation and prior
correction) and ``backbone.onnx`` (the frozen backbone). The backbone runs in ONNX Runtime and the
head in NumPy, so ``postergenre predict`` starts in well under a second: importing torch alone
would take longer than scoring a poster.

A model that also reads poster text (``model.json``'s ``text``) OCRs each poster with the OCR
settings it was trained with and embeds the text with the same sentence model; those imports are
lazy, so image-only models keep this module torch-free.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
BACKBONE_ONNX = "backbone.onnx"
# The text head of a late-fusion model (postergenre.training.fusion), beside the image head.
TEXT_HEAD_WEIGHTS = "text_head.safetensors"
TEXT_INSTALL_HINT = "pip install 'postergenre[text]'"
DEFAULT_BATCH_SIZE = 16


def member_onnx_name(k: int) -> str:
    """The run folder's ONNX file of backbone ``k`` of an ensemble (the only one: ``backbone.onnx``)."""
    return BACKBONE_ONNX if k == 0 else f"backbone.{k}.onnx"


@dataclass
class SavedModel:
    """A trained head as NumPy arrays, with its description from ``model.json``."""

    info: dict
    tensors: dict[str, np.ndarray]
    text_tensors: dict[str, np.ndarray] | None = None

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
            text_tensors = None
            if (info.get("text") or {}).get("fusion") == "late":
                text_tensors = load_file(str(run_dir / TEXT_HEAD_WEIGHTS))
        except (ValueError, OSError) as exc:
            raise PosterGenreError(f"{run_dir}: cannot read the saved model ({exc}); train the run again") from exc
        return cls(info, tensors, text_tensors)

    @property
    def text(self) -> dict | None:
        """How the model reads poster text (``model.json``'s ``text``); None for an image-only model."""
        # Runs saved before text fusion wrote ``"text": false``.
        return self.info.get("text") or None

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

    def member_preprocessing(self) -> list:
        """The preprocessing of each backbone, in the order of its columns (one for a single backbone)."""
        from postergenre.models.preprocessing import Preprocessing

        members = self.info.get("members") or [{"preprocessing": self.info["preprocessing"]}]
        return [Preprocessing.from_dict(member["preprocessing"]) for member in members]

    def onnx_names(self) -> list[str]:
        """The run folder's backbone files, one per backbone (see :func:`member_onnx_name`)."""
        return [member_onnx_name(k) for k in range(len(self.info.get("members") or [None]))]

    def logits(self, features: np.ndarray, text_features: np.ndarray | None = None) -> np.ndarray:
        """(N, G) logits for raw pooled features (N, D): the same arithmetic as the torch heads.

        A text model also needs the posters' text features (N, 385), from :func:`text_features_for`.
        """
        head, text = self.info["head"], self.text
        if text is None:
            return head_logits(head, self.tensors, features)
        if text_features is None:
            raise PosterGenreError("this model also reads poster text: pass the posters' text features")
        if text["fusion"] == "concat":
            return head_logits(head, self.tensors, np.hstack([features, text_features]))
        weight = float(text["late_weight"])
        image = head_logits(head, self.tensors, features)
        return weight * image + (1 - weight) * head_logits(text["head"], self.text_tensors, text_features)

    def probabilities(self, features: np.ndarray, text_features: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.logits(features, text_features))


def text_features_for(image_paths: dict, text: dict, *, progress: bool = False) -> tuple[list[str], np.ndarray, int]:
    """``(ids, text features (N, 385), posters whose OCR came from the cache)`` for ``{id: path}``.

    ``text`` is a model's ``model.json`` ``text`` entry: the posters are read with its OCR settings
    and embedded with its confidence floor, as in training (both cached per poster).
    """
    text_functions()  # a missing text extra is named here
    from postergenre.text.embed import stored_text_features

    min_confidence = float(text["min_confidence"])
    return stored_text_features(
        image_paths,
        ocr_settings(text),
        min_confidence=min_confidence,
        split_words=splits_words(text),
        progress=progress,
    )


def splits_words(text: dict) -> bool:
    """Whether a text model's poster text had its glued words split (models saved before that option: no)."""
    return bool(text.get("split_words", False))


def ocr_settings(text: dict):
    """The OCR settings a text model was trained with; an unreadable entry says what to do."""
    from postergenre.text.ocr import OcrSettings

    try:
        return OcrSettings.from_dict(text["ocr"])
    except (TypeError, ValueError, KeyError) as exc:
        raise PosterGenreError(
            f"the model's OCR settings {text.get('ocr')} do not fit this postergenre's OCR ({exc}); "
            "use the postergenre version that trained the run, or train it again"
        ) from exc


def text_functions():
    """``(ocr_posters, text_features)``, or an error naming the install when the text extra is missing."""
    try:
        from postergenre.text.embed import _model_version, text_features
        from postergenre.text.ocr import ocr_posters, package_version

        package_version(), _model_version()
    except ImportError as exc:
        raise PosterGenreError(
            f"this model reads poster text, which needs the text extra; install it with: {TEXT_INSTALL_HINT}"
        ) from exc
    return ocr_posters, text_features


def head_logits(head: dict | str, tensors: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Run a saved head (see :mod:`postergenre.training.heads`) in NumPy.

    ``head`` is ``model.json``'s head description (a bare type name does for a single head); an
    ensemble averages its members' logits, each on its own columns and ``members.K.`` tensors.
    """
    description = {"type": head} if isinstance(head, str) else head
    head_type = description["type"]
    if head_type == "ensemble":
        logits = []
        for k, (member, (start, stop)) in enumerate(zip(description["members"], description["columns"], strict=True)):
            prefix = f"members.{k}."
            own = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
            logits.append(head_logits(member, own, np.asarray(features)[:, start:stop]))
        return np.mean(logits, axis=0)
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
    # Milliseconds per scored poster: "image" (decoding and backbone) and, for a text model, "ocr"
    # (OCR and text features); "ocr_cached" counts posters whose OCR came from the cache.
    timings: dict = field(default_factory=dict)


class Predictor:
    """Genre probabilities and decisions for poster images, from a run folder.

    >>> predictor = Predictor.load("runs/lite0")          # doctest: +SKIP
    >>> predictor.predict_images(["poster.jpg"])          # doctest: +SKIP
    """

    def __init__(self, model: SavedModel, sessions, run_dir: Path):
        self.model, self.run_dir = model, run_dir
        sessions = sessions if isinstance(sessions, list | tuple) else [sessions]
        preprocessing = model.member_preprocessing()
        if len(sessions) != len(preprocessing):
            raise PosterGenreError(f"{run_dir}: {len(sessions)} backbone files for {len(preprocessing)} backbones")
        self.members = [BackboneSession(session, pre) for session, pre in zip(sessions, preprocessing, strict=True)]
        # The first backbone's; an ensemble's others read their own (member_preprocessing).
        self.preprocessing = self.members[0].preprocessing
        self.session = self.members[0].session
        self.flip = bool(model.info.get("flip", False))

    @classmethod
    def load(cls, run_dir: str | Path, *, threads: int | None = None) -> Predictor:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise PosterGenreError(f"{run_dir}: run folder not found; pass the --out folder of postergenre train")
        model = SavedModel.load(run_dir)
        onnx_paths = [run_dir / name for name in model.onnx_names()]
        for onnx_path in onnx_paths:
            if not onnx_path.is_file():
                raise PosterGenreError(f"{onnx_path}: not found; the run is incomplete, train it again")
        if model.text is not None:
            text_functions()  # a missing text extra is reported now, not after the images are scored
        return cls(model, [open_session(path, threads) for path in onnx_paths], run_dir)

    @property
    def genres(self) -> list[str]:
        return self.model.genres

    @property
    def thresholds(self) -> np.ndarray:
        return self.model.thresholds

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled features for a normalised NCHW batch, averaged with the mirror image if the model was.

        One backbone only: each of an ensemble's backbones reads the poster at its own input
        (:meth:`image_features` and :meth:`score_paths` prepare them).
        """
        if self.is_ensemble:
            raise PosterGenreError(
                f"{self.run_dir} is an ensemble ({self.model.info['backbone']}): each backbone reads its own "
                "input, so score decoded images (image_features) or files (score_paths) instead"
            )
        return self._member_features(self.members[0], batch)

    def image_features(self, image) -> np.ndarray:
        """(1, num_features) features of one decoded poster (a PIL image), every backbone's side by side."""
        return np.hstack([self._member_features(member, member.preprocessing(image)[None]) for member in self.members])

    def _member_features(self, member: BackboneSession, batch: np.ndarray) -> np.ndarray:
        features = member.run(batch)
        if self.flip:
            features = (features + member.run(batch[..., ::-1])) / 2
        return features

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

    @property
    def uses_text(self) -> bool:
        return self.model.text is not None

    def score_paths(self, paths, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> Scores:
        """Like :meth:`predict_images`, as plain arrays: the command line skips importing pandas."""
        paths = [str(p) for p in paths]
        scored, features, failed = [], [], {}
        started = time.perf_counter()
        bar = _progress_bar(len(paths), progress)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            names, batches = self._load_batch(chunk, failed)
            if names:
                parts = [self._member_features(m, batch) for m, batch in zip(self.members, batches, strict=True)]
                features.append(np.hstack(parts))
                scored.extend(names)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        timings = {"image": _per_poster(started, len(scored))}
        text_features = None
        if self.uses_text and scored:
            started = time.perf_counter()
            # The posters read as a batch, so a long list shares the OCR worker processes; keyed by
            # position, as a path may be given twice.
            keys = [str(k) for k in range(len(scored))]
            ids, text_features, n_cached = text_features_for(
                dict(zip(keys, scored, strict=True)), self.model.text, progress=progress
            )
            assert ids == keys, "text features must come back in the order asked"
            timings.update(ocr=_per_poster(started, len(scored)), ocr_cached=n_cached)
        values = np.zeros((0, len(self.genres)))
        if scored:
            values = self.model.probabilities(np.concatenate(features), text_features)
        genres = np.asarray(self.genres)
        predicted = [list(genres[row >= self.thresholds]) for row in values]
        return Scores(scored, values, predicted, failed, timings)

    def text_features_of_image(self, image) -> np.ndarray:
        """(1, 385) text features of one decoded poster (a PIL image at full resolution), not cached."""
        from postergenre.text.embed import text_features

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        lines = self.ocr_engine().read(bgr)
        text = self.model.text
        return text_features(
            {"poster": lines}, min_confidence=float(text["min_confidence"]), split_words=splits_words(text)
        )[1]

    def ocr_engine(self):
        """The OCR engine with the model's settings, made once (loading its models takes a moment)."""
        if getattr(self, "_ocr_engine", None) is None:
            text_functions()
            from postergenre.text.ocr import OcrEngine

            self._ocr_engine = OcrEngine(ocr_settings(self.model.text))
        return self._ocr_engine

    def warm_up_text(self) -> None:
        """Load the OCR engine and the sentence model now, so that the first poster does not wait for them."""
        if self.uses_text:
            from postergenre.text.embed import load_text_model

            self.ocr_engine()
            load_text_model()

    def _load_batch(self, paths: list[str], failed: dict[str, str]) -> tuple[list[str], list[np.ndarray]]:
        """The readable paths, and one input batch per backbone."""
        from postergenre.data.images import ImageError
        from postergenre.features.extract import load_input

        names, arrays = [], []
        for path in paths:
            try:
                # The same decoding as feature extraction, so a poster scores as it did in evaluation.
                arrays.append([load_input(path, member.preprocessing) for member in self.members])
            except ImageError as exc:
                failed[path] = str(exc)
                logger.warning("skipped: %s", exc)
                continue
            names.append(path)
        return names, [np.stack(inputs) for inputs in zip(*arrays, strict=True)]


class BackboneSession:
    """One backbone's ONNX Runtime session with the preprocessing its inputs need."""

    def __init__(self, session, preprocessing):
        self.session, self.preprocessing = session, preprocessing
        self.input_name = session.get_inputs()[0].name
        batch_dim = session.get_inputs()[0].shape[0]
        # An export with a fixed batch dimension can only take that many images at once.
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch or len(batch)
        parts = [self.session.run(None, {self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        return np.concatenate(parts).reshape(len(batch), -1)


def _per_poster(started: float, n_posters: int) -> float | None:
    return round((time.perf_counter() - started) * 1000 / n_posters, 2) if n_posters else None


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
