"""A training run from dataset to run folder, and the evaluation of a saved run.

``train_run`` reads as its steps: choose the genres, split, extract (cached) features, train a
head (with or without poster text) stopping early on validation, train it again on train +
validation for the chosen epochs, tune thresholds on the first head's validation predictions, save
the model and the backbone, then evaluate on the test split with the same function that
``postergenre evaluate`` calls.

A run folder holds:

- ``config.json``: every resolved setting, the dataset paths, library versions;
- ``split.csv``: which poster is on which side (pass it to ``--split`` to keep a test set);
- ``history.csv``: one row per epoch of the head that early stopping chose (the refit has no
  validation figures);
- ``model.json`` and ``model.safetensors``: the saved head (no pickle anywhere);
- ``backbone.onnx``: the frozen backbone, so that the run predicts on its own;
- ``validation_predictions.csv``: validation probabilities, which the thresholds were tuned on;
- ``metrics.json`` and ``report.html``: the test evaluation.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from postergenre.errors import DataError, PosterGenreError
from postergenre.inference.predictor import BACKBONE_ONNX, MODEL_JSON, MODEL_WEIGHTS, SavedModel, member_onnx_name

logger = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
SPLIT_CSV = "split.csv"
HISTORY_CSV = "history.csv"
VALIDATION_CSV = "validation_predictions.csv"
METRICS_JSON = "metrics.json"
RUN_FILES = (
    CONFIG_JSON,
    SPLIT_CSV,
    HISTORY_CSV,
    MODEL_JSON,
    MODEL_WEIGHTS,
    BACKBONE_ONNX,
    VALIDATION_CSV,
    METRICS_JSON,
)


@dataclass
class Features:
    """Pooled features by poster id, as one (N, D) array."""

    ids: list[str]
    values: np.ndarray
    spec: dict = field(default_factory=dict)

    def take(self, ids) -> np.ndarray:
        row = {id_: k for k, id_ in enumerate(self.ids)}
        return self.values[[row[i] for i in ids]]


@dataclass
class Evaluation:
    """What evaluating a run wrote, and the figures."""

    metrics: dict
    metrics_path: Path
    report_path: Path | None


@dataclass
class RunResult:
    run_dir: Path
    evaluation: Evaluation
    warnings: list[str]


# ---------------------------------------------------------------------------------------------
# Training


def train_run(
    dataset,
    config,
    out_dir: str | Path,
    *,
    split_path: str | Path | None = None,
    skip_missing: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train a genre model on ``dataset`` (a ``PosterDataset``) and write the run folder ``out_dir``.

    Args:
        config: a :class:`~postergenre.training.config.TrainConfig`.
        split_path: a ``split.csv`` to reuse (keeps the test set of an earlier run); default: a
            new split made with ``config.seed``, identical posters kept on one side.
        skip_missing: go on without posters that cannot be decoded instead of failing.
    """
    from postergenre.data.genres import select_genres
    from postergenre.training.config import resolve_preprocessing
    from postergenre.training.fusion import choose_text
    from postergenre.training.refit import refit_candidate, refit_choice

    run_dir = create_run_folder(out_dir)
    selection = select_genres(dataset.labels.loc[dataset.ids], config.min_positives)
    genres = selection.kept
    split = resolve_split(dataset, config.seed, split_path, progress)
    preprocessing = resolve_preprocessing(config)
    write_config(run_dir, config, dataset, selection, split_path)
    save_split_file(split, run_dir / SPLIT_CSV)
    spans = []  # an ensemble's column span per backbone

    if config.from_images:
        from postergenre.training.images import train_on_images

        features, trained = train_on_images(
            dataset, config, preprocessing, split, genres, skip_missing=skip_missing, progress=progress
        )
        sides = side_arrays(features, dataset.labels[genres], split)
        warnings = split_warnings(sides, genres)
        train_image = lambda: trained  # noqa: E731
    elif config.fine_tune:
        from postergenre.training.finetune import train_fine_tuned

        features, tuned = train_fine_tuned(
            dataset, config, preprocessing, split, genres, skip_missing=skip_missing, progress=progress
        )
        sides = side_arrays(features, dataset.labels[genres], split)
        warnings = split_warnings(sides, genres)
        train_image = lambda: tuned  # noqa: E731
    else:
        features = extract_dataset_features(dataset, config, preprocessing, skip_missing, progress)
        sides = side_arrays(features, dataset.labels[genres], split)
        warnings = split_warnings(sides, genres)
        spans = [tuple(member["columns"]) for member in features.spec.get("members", [])]
        train_image = lambda: train_head(config, sides, spans)  # noqa: E731
    # Poster text: with it (concatenated or late-fused) or without, as config.text and validation say.
    # The image head trains there, beside the text heads.
    # The thresholds and fusion weight come from the validation predictions of the heads chosen
    # there; the heads saved are trained again on train + validation (postergenre.training.refit),
    # each right after its first fit.
    early_refit = partial(refit_candidate, config, spans) if config.refits else None
    text = choose_text(dataset, config, features, split, genres, train_image, progress, early_refit)
    refit = refit_choice(text, config, spans) if config.refits else None
    # A trained backbone belongs to the image result, which text fusion may swap for a concat head's.
    trained_backbone = getattr(text.image_result, "backbone", None)
    result = text.result
    warnings += result.warnings

    val_ids, _, y_val = sides["validation"]
    val_scores = text.val_scores
    thresholds = tune_validation_thresholds(y_val, val_scores)
    prevalence = sides["train"][2].mean(0)
    info = describe_model(run_dir, config, result, genres, thresholds, prevalence, preprocessing, features.spec)
    info.update(text.model_entries(), refit=refit)
    save_model(run_dir, result.head, info)
    text.save(run_dir)
    if config.trains_backbone:
        from postergenre.training.images import save_trained_backbone

        save_trained_backbone(run_dir, trained_backbone, preprocessing.input_size)
    else:
        copy_backbone(run_dir, config, preprocessing)
    write_history(run_dir, result.history)
    pd.DataFrame(val_scores, index=pd.Index(val_ids, name="Id"), columns=genres).to_csv(run_dir / VALIDATION_CSV)
    update_config(
        run_dir,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        warnings=warnings,
        **text.model_entries(),
    )

    evaluation = evaluate_run(run_dir, dataset, features=features, progress=progress)
    return RunResult(run_dir, evaluation, warnings + evaluation.metrics.get("warnings", []))


def create_run_folder(out_dir: str | Path) -> Path:
    run_dir = Path(out_dir)
    if (run_dir / MODEL_JSON).exists():
        raise PosterGenreError(
            f"{run_dir}: already holds a trained run (model.json); choose another --out or delete it"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise PosterGenreError(f"{run_dir}: is a file; --out must name a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def resolve_split(dataset, seed: int, split_path: str | Path | None, progress: bool) -> pd.DataFrame:
    """The given split (checked against the dataset), or a new one that keeps identical posters together."""
    from postergenre.data.splits import load_split, make_split, split_problems

    ids = dataset.ids
    if split_path is not None:
        split = load_split(split_path, ids)
        for problem in split_problems(split)[:5]:
            logger.warning("%s: %s; test figures may be optimistic", split_path, problem)
        return split
    from postergenre.data.duplicates import poster_groups
    from postergenre.data.images import scan_images

    records = scan_images({i: dataset.image_paths[i] for i in ids}, progress=progress)
    return make_split(dataset.labels.loc[ids], poster_groups(ids, records), seed=seed)


def save_split_file(split: pd.DataFrame, path: Path) -> None:
    from postergenre.data.splits import save_split

    save_split(split[["split", "group"]], path)


def extract_dataset_features(dataset, config, preprocessing, skip_missing: bool, progress: bool) -> Features:
    """Features of every labelled poster (from the cache when extracted before); an ensemble's
    backbones' features side by side, each backbone at its own input."""
    from postergenre.data.dataset import drop_images
    from postergenre.features import extract_features

    image_paths = {i: dataset.image_paths[i] for i in dataset.ids}
    extract = partial(
        extract_features,
        image_paths,
        flip=config.flip,
        batch_size=config.feature_batch_size,
        progress=progress,
        weights=config.weights,
        pooled_stages=config.pooled_stages,
    )
    if config.is_ensemble:
        from postergenre.training.config import member_preprocessing, split_member
        from postergenre.training.ensemble import join_features

        members = {
            member: extract(split_member(member)[0], preprocessing=pre)
            for member, pre in member_preprocessing(config).items()
        }
        ids, values, failed, spec = join_features(members)
        drop_images(dataset, failed, skip=skip_missing)
        return Features(ids, values, spec)
    feature_set = extract(config.backbone, preprocessing=preprocessing)
    drop_images(dataset, dict(feature_set.failed), skip=skip_missing)
    return Features(list(feature_set.ids), np.asarray(feature_set.values, dtype=np.float32), dict(feature_set.spec))


def side_arrays(features: Features, labels: pd.DataFrame, split: pd.DataFrame) -> dict:
    """{side: (ids, features (N, D), labels (N, G) int8)} for train, validation and test."""
    have = set(features.ids)
    sides = {}
    for side in ("train", "validation", "test"):
        ids = [i for i in split.index[split["split"] == side] if i in have]
        sides[side] = (ids, features.take(ids), labels.loc[ids].to_numpy(dtype=np.int8))
    for side in ("train", "validation"):
        if not sides[side][0]:
            raise DataError(f"the {side} split holds no poster with features; use a larger dataset or another split")
    return sides


def split_warnings(sides: dict, genres: list[str]) -> list[str]:
    """Warnings for genres with no positive in the training or validation split."""
    warnings = []
    for side, consequence in (
        ("train", "it cannot be learnt and its probabilities will be near 0"),
        ("validation", "its threshold cannot be tuned and early stopping ignores it"),
    ):
        missing = [g for g, n in zip(genres, sides[side][2].sum(0), strict=True) if n == 0]
        if missing:
            warnings.append(
                f"{len(missing)} genres have no positive poster in the {side} split ({', '.join(missing)}): "
                f"{consequence}; raise --min-positives or use a larger dataset"
            )
            logger.warning(warnings[-1])
    return warnings


def train_head(config, sides: dict, spans: list[tuple[int, int]] | None = None):
    """Train the head the config asks for on the train split, stopping early on validation; with
    ``spans`` (the column span of each backbone of an ensemble), one head per backbone."""
    from postergenre.training.multilabel import train_multilabel
    from postergenre.training.per_genre import train_per_genre

    train = sides["train"][1:]
    validation = sides["validation"][1:]
    trainer = train_per_genre if config.mode == "per-genre" else train_multilabel
    if spans:
        from postergenre.training.ensemble import train_ensemble

        logger.info("training one %s %s head per backbone of %s", config.mode, config.head_type, config.backbone)
        return train_ensemble(trainer, config, sides, spans)
    logger.info(
        "training a %s %s head on %d posters (%d for validation), %d genres",
        config.mode,
        config.head_type,
        len(train[0]),
        len(validation[0]),
        train[1].shape[1],
    )
    return trainer(train, validation, config)


def probabilities(head, features: np.ndarray) -> np.ndarray:
    from postergenre.inference.predictor import sigmoid
    from postergenre.training.loop import predict_logits

    return sigmoid(predict_logits(head, features))


def tune_validation_thresholds(y_val: np.ndarray, val_scores: np.ndarray) -> np.ndarray:
    from postergenre.evaluation.thresholds import tune_thresholds

    return np.asarray(tune_thresholds(y_val, val_scores), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Saving


def describe_model(run_dir, config, result, genres, thresholds, prevalence, preprocessing, spec) -> dict:
    """Everything ``model.json`` says about the model: enough to rebuild and use it."""
    from postergenre import __version__

    offset = result.head.logit_offset.numpy()
    return {
        "name": run_dir.resolve().name,
        "mode": config.mode,
        "head": result.head.describe(),
        "loss": config.loss,
        "backbone": config.backbone,
        "weights": spec.get("weights", config.weights),
        "preprocessing": preprocessing.to_dict(),
        # Stages before the last whose pooled outputs are in the features (0 in runs saved before it existed).
        "pooled_stages": int(spec.get("pooled_stages", 0)),
        "flip": config.flip,
        "augment": config.augment,
        "trained_backbone": config.trains_backbone,
        "fine_tune": config.fine_tune,
        "genres": list(genres),
        "thresholds": [float(t) for t in thresholds],
        "train_prevalence": [float(p) for p in prevalence],
        "prior_correction": [float(o) for o in offset] if config.mode == "per-genre" else None,
        "min_positives": config.min_positives,
        "min_test_positives": config.min_test_positives,
        "seed": config.seed,
        "best_epoch": result.best_epoch,
        "features": spec,
        # An ensemble's backbones: what each reads, where its columns are, its ONNX file in the run.
        "members": [
            {
                "member": member["member"],
                "backbone": member["backbone"],
                "preprocessing": member["preprocessing"],
                "pooled_stages": int(member.get("pooled_stages", 0)),
                "columns": member["columns"],
                "onnx": member_onnx_name(k),
            }
            for k, member in enumerate(spec.get("members", []))
        ]
        or None,
        "text": None,  # how the model reads poster text; set by postergenre.training.fusion
        "postergenre_version": __version__,
        "created": now(),
    }


def save_model(run_dir: Path, head, info: dict) -> None:
    """``model.safetensors`` (the head's tensors) and ``model.json`` (its description)."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().contiguous() for name, t in head.state_dict().items()}
    save_file(tensors, str(run_dir / MODEL_WEIGHTS), metadata={"postergenre": info["postergenre_version"]})
    write_json(run_dir / MODEL_JSON, info)


def copy_backbone(run_dir: Path, config, preprocessing) -> None:
    """The frozen backbone (each of an ensemble's) as ONNX inside the run folder, hard-linked when
    the file system allows."""
    from postergenre.features.onnx_export import export_backbone
    from postergenre.training.config import member_preprocessing, split_member

    members = member_preprocessing(config) if config.is_ensemble else {config.backbone: preprocessing}
    for k, (member, member_input) in enumerate(members.items()):
        source = export_backbone(
            split_member(member)[0], member_input, weights=config.weights, pooled_stages=config.pooled_stages
        )
        link_or_copy(source, run_dir / member_onnx_name(k))


def link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_config(run_dir: Path, config, dataset, selection, split_path) -> None:
    from postergenre.training.config import versions

    settings = {
        **config.to_dict(),
        "dataset": {
            "csv": str(Path(dataset.csv_path).resolve()),
            "images": str(Path(dataset.images_dir).resolve()),
            "n_posters": len(dataset.ids),
        },
        "genres": selection.kept,
        "dropped_genres": selection.dropped,
        "split_file": str(Path(split_path).resolve()) if split_path else None,
        "versions": versions(),
        "created": now(),
    }
    write_json(run_dir / CONFIG_JSON, settings)


def update_config(run_dir: Path, **values) -> None:
    path = run_dir / CONFIG_JSON
    write_json(path, {**json.loads(path.read_text()), **values})


def write_history(run_dir: Path, history: list[dict]) -> None:
    """``history.csv``; an ensemble's has each backbone's columns (``loss <backbone>``...) instead."""
    columns = ["epoch", "loss", "val_macro_auc", "val_balanced_accuracy", "seconds"]
    if history and "loss" not in history[0]:
        columns = list(dict.fromkeys(key for row in history for key in row))
    pd.DataFrame(history, columns=columns).to_csv(run_dir / HISTORY_CSV, index=False)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_run(
    run_dir: str | Path,
    dataset=None,
    *,
    out_dir: str | Path | None = None,
    features: Features | None = None,
    min_test_positives: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Evaluate a saved run and write ``metrics.json`` and ``report.html``.

    On the run's own dataset (the default) only its test split is scored. Another dataset is
    scored whole; its genres are matched to the model's by name, and genres only one side knows
    are reported and skipped.

    Args:
        dataset: a ``PosterDataset``; default: the one the run was trained on.
        out_dir: where to write; default: the run folder for its own test split, else
            ``RUN/evaluation-<dataset folder>``.
        features: features already extracted for these posters (saves extracting them again).
        min_test_positives: genres with fewer test positives are flagged and kept out of the
            macro figures; default: the run's setting (10 unless trained otherwise).
    """
    run_dir = Path(run_dir)
    model = SavedModel.load(run_dir)
    config = json.loads((run_dir / CONFIG_JSON).read_text()) if (run_dir / CONFIG_JSON).is_file() else {}
    dataset = dataset if dataset is not None else load_run_dataset(run_dir, config)
    own = is_run_dataset(dataset, config)
    ids = test_ids(run_dir, dataset) if own else list(dataset.ids)
    # On its own dataset the genres left out at training (too few positives) are no news.
    ignored = set(config.get("dropped_genres") or {}) if own else set()
    genres, skipped = match_genres(model.genres, [g for g in dataset.genres if g not in ignored])
    out_dir = Path(out_dir) if out_dir else run_dir if own else run_dir / f"evaluation-{dataset_name(dataset)}"
    out_dir.mkdir(parents=True, exist_ok=True)

    if features is None and model.info.get("trained_backbone"):
        # A run that trained its backbone scores with its own (backbone.onnx), not the registry's weights.
        from postergenre.training.images import run_folder_features

        features = run_folder_features(run_dir, {i: dataset.image_paths[i] for i in ids}, progress=progress)
    if features is None:
        features = run_features(model, dataset, ids, config.get("weights"), progress)
    have = set(features.ids)
    ids = [i for i in ids if i in have]
    if not ids:
        raise DataError(f"{dataset.csv_path}: no poster to evaluate on; check the dataset and its images")
    text = poster_text(model, dataset, ids, progress)
    columns = [model.genres.index(g) for g in genres]
    y_true = dataset.labels.loc[ids, genres].to_numpy(dtype=np.int8)
    y_score = model.probabilities(features.take(ids), text)[:, columns]
    if min_test_positives is None:
        min_test_positives = int(model.info.get("min_test_positives", config.get("min_test_positives", 10)))
    metrics = score_run(model, y_true, y_score, genres, columns, min_test_positives)
    metrics.update(evaluated_on(dataset, own, len(ids), skipped))
    metrics_path = out_dir / METRICS_JSON
    write_json(metrics_path, metrics)
    sections = explained_examples(run_dir, [dataset.image_paths[i] for i in ids], y_true, y_score, genres)
    if own:
        from postergenre.training.fusion import text_section

        sections = text_section(model.info) + sections
    report = write_run_report(
        out_dir, metrics, model, run_dir if own else None, y_true, y_score, genres, extra_sections=sections
    )
    return Evaluation(metrics, metrics_path, report)


def load_run_dataset(run_dir: Path, config: dict):
    from postergenre.data.dataset import load_dataset

    paths = config.get("dataset") or {}
    if not paths.get("csv") or not paths.get("images"):
        raise PosterGenreError(f"{run_dir / CONFIG_JSON}: no dataset paths; pass the dataset folder as DATA")
    try:
        return load_dataset(csv_path=paths["csv"], images=paths["images"], skip_missing=True)
    except DataError as exc:
        raise DataError(f"{exc} (the dataset of run {run_dir}; pass DATA if it moved)") from exc


def is_run_dataset(dataset, config: dict) -> bool:
    csv = (config.get("dataset") or {}).get("csv")
    return csv is not None and Path(dataset.csv_path).resolve() == Path(csv).resolve()


def test_ids(run_dir: Path, dataset) -> list[str]:
    from postergenre.data.splits import load_split

    split = load_split(run_dir / SPLIT_CSV)
    test = set(split.index[split["split"] == "test"])
    return [i for i in dataset.ids if i in test]


def match_genres(model_genres: list[str], data_genres: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The genres both know, in the model's order, and those only one side has."""
    from postergenre.data.genres import NOT_GENRES

    common = [g for g in model_genres if g in data_genres]
    skipped = {
        "not_in_data": [g for g in model_genres if g not in data_genres],
        "not_in_model": [g for g in data_genres if g not in model_genres and g not in NOT_GENRES],
    }
    if not common:
        raise DataError(
            f"the dataset shares no genre with the model (model: {', '.join(model_genres)}; "
            f"data: {', '.join(data_genres)}); genres are matched by their column names"
        )
    if skipped["not_in_data"]:
        logger.warning("genres the data lacks are skipped: %s", ", ".join(skipped["not_in_data"]))
    if skipped["not_in_model"]:
        logger.warning("genres the model does not know are skipped: %s", ", ".join(skipped["not_in_model"]))
    return common, skipped


def run_features(model: SavedModel, dataset, ids: list[str], weights: str | None, progress: bool) -> Features:
    """Features of these posters, computed exactly as the model's were (backbone, preprocessing, flip);
    an ensemble's backbones' side by side."""
    from postergenre.features import extract_features
    from postergenre.models.preprocessing import Preprocessing

    info = model.info
    extract = partial(
        extract_features,
        {i: dataset.image_paths[i] for i in ids},
        flip=bool(info.get("flip", False)),
        progress=progress,
        weights=weights,
    )
    if info.get("members"):
        from postergenre.training.ensemble import join_features

        members = {}
        for member in info["members"]:
            preprocessing = Preprocessing.from_dict(member["preprocessing"])
            members[member.get("member", member["backbone"])] = extract(
                member["backbone"], preprocessing=preprocessing, pooled_stages=member.get("pooled_stages", 0)
            )
        ids, values, failed, spec = join_features(members)
        features = Features(ids, values, spec)
    else:
        feature_set = extract(
            info["backbone"], preprocessing=model.preprocessing(), pooled_stages=info.get("pooled_stages", 0)
        )
        failed = dict(feature_set.failed)
        values = np.asarray(feature_set.values, dtype=np.float32)
        features = Features(list(feature_set.ids), values, dict(feature_set.spec))
    for id_, reason in failed.items():
        logger.warning("skipped %s: %s", id_, reason)
    return features


def poster_text(model: SavedModel, dataset, ids: list[str], progress: bool) -> np.ndarray | None:
    """Text features of these posters, read as the model reads poster text (None for an image model)."""
    if model.text is None:
        return None
    from postergenre.inference.predictor import text_features_for

    _, values, _ = text_features_for({i: dataset.image_paths[i] for i in ids}, model.text, progress=progress)
    return values


def score_run(model: SavedModel, y_true, y_score, genres, columns, min_test_positives: int) -> dict:
    from postergenre.evaluation.metrics import evaluate_scores

    return evaluate_scores(
        y_true,
        y_score,
        genres,
        model.thresholds[columns],
        train_prevalence=model.train_prevalence[columns],
        min_positives=min_test_positives,
    )


def evaluated_on(dataset, own: bool, n_posters: int, skipped: dict) -> dict:
    return {
        "dataset": {
            "csv": str(Path(dataset.csv_path).resolve()),
            "split": "test" if own else "all",
            "n_posters": n_posters,
        },
        "skipped_genres": skipped,
    }


def dataset_name(dataset) -> str:
    return Path(dataset.csv_path).resolve().parent.name or "data"


def explained_examples(run_dir: Path, image_paths: list[Path], y_true, y_score, genres) -> list[tuple[str, str]]:
    """The report's section of explained test posters: Grad-CAM on the most confident right and
    wrong answers for a few genres. A failure here costs the section, never the report."""
    try:
        from postergenre.explain.classifier import load_classifier
        from postergenre.explain.report import explained_examples_html

        classifier = load_classifier(run_dir)
        html = explained_examples_html(classifier, image_paths, y_true, y_score, genres)
    except Exception as exc:
        logger.warning("the report has no explained examples: %s", exc)
        return []
    return [("Explained test posters (Grad-CAM)", html)]


PER_GENRE_INFO = ("genres", "thresholds", "train_prevalence", "prior_correction")


def write_run_report(out_dir, metrics, model, run_dir, y_true, y_score, genres, extra_sections=()) -> Path | None:
    from postergenre.evaluation.report import write_report

    history = None
    if run_dir is not None and (run_dir / HISTORY_CSV).is_file():
        history = pd.read_csv(run_dir / HISTORY_CSV)
    return Path(
        write_report(
            out_dir,
            metrics,
            # Per-genre numbers are in the report's genre table; lists of 20+ floats only clutter this one.
            model_info={k: v for k, v in model.info.items() if k not in PER_GENRE_INFO},
            history=history,
            y_true=y_true,
            y_score=y_score,
            genres=genres,
            extra_sections=extra_sections,
        )
    )


def load_head(run_dir: str | Path):
    """The trained head of a run folder as a torch module in eval mode, with ``model.json``."""
    from safetensors.torch import load_file

    from postergenre.training.heads import head_from_description

    model = SavedModel.load(run_dir)
    head = head_from_description(model.info["head"])
    head.load_state_dict(load_file(str(Path(run_dir) / MODEL_WEIGHTS)))
    return head.eval(), model.info
