"""Test doubles for the training, evaluation and prediction tests.

The real backbones take seconds to load and export; these stand-ins compute tiny "features" (the
poster's mean colour in each quarter, 12 numbers) the same way in NumPy and in a small ONNX graph,
so a run trained on the NumPy features predicts through the ONNX file exactly as it would with a
real backbone. Evaluation modules that are not installed yet get simple stand-ins too.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np

from postergenre.data.images import ImageError, open_rgb
from postergenre.models.preprocessing import Preprocessing

INPUT_SIZE = (32, 32)
NUM_FEATURES = 12


def fake_preprocessing(backbone: str | None = None, *, resize: str | None = None) -> Preprocessing:
    return Preprocessing(INPUT_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize=resize or "stretch")


def pooled(batch: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) -> (N, 12): the mean of each channel in each quarter of the image."""
    n, c, h, w = batch.shape
    return batch.reshape(n, c, 2, h // 2, 2, w // 2).mean((3, 5)).reshape(n, c * 4).astype(np.float32)


def fake_extract_features(image_paths, backbone, *, preprocessing=None, flip=False, cache_dir=None, **_):
    """Same signature and result shape as ``postergenre.features.extract_features``."""
    preprocessing = preprocessing or fake_preprocessing(backbone)
    ids, rows, failed = [], [], {}
    for id_, path in image_paths.items():
        try:
            x = preprocessing(open_rgb(path))[None]
        except ImageError as exc:
            failed[id_] = str(exc)
            continue
        features = pooled(x)
        if flip:
            features = (features + pooled(x[..., ::-1])) / 2
        ids.append(id_)
        rows.append(features[0])
    values = np.stack(rows) if rows else np.zeros((0, NUM_FEATURES), np.float32)
    spec = {"backbone": backbone, "weights": "fake-weights-v1", "flip": flip, "preprocessing": preprocessing.to_dict()}
    return types.SimpleNamespace(ids=ids, values=values, failed=failed, spec=spec)


def write_fake_onnx(path: Path, input_size: tuple[int, int] = INPUT_SIZE) -> Path:
    """An ONNX backbone computing :func:`pooled`: (N, 3, H, W) float32 -> (N, 12)."""
    import onnx
    from onnx import TensorProto, helper

    h, w = input_size
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[h // 2, w // 2], strides=[h // 2, w // 2]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_backbone",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", NUM_FEATURES])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_fake_export(folder: Path):
    def fake_export_onnx(backbone, preprocessing, weights=None, pooled_stages=None):
        height, width = preprocessing.input_size
        return write_fake_onnx(folder / f"{backbone}-{height}x{width}.onnx", (height, width))

    return fake_export_onnx


# Stand-ins for postergenre.evaluation, used only where the real modules are not installed.


def _tune_thresholds(y_true, y_score, **_):
    return np.asarray(y_score, dtype=np.float64).mean(0)


def _evaluate_scores(y_true, y_score, genres, thresholds, *, train_prevalence, min_positives=10):
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true)
    in_macro = [
        g for g in range(len(genres)) if min(y_true[:, g].sum(), (1 - y_true[:, g]).sum()) >= max(min_positives, 1)
    ]
    aucs = [roc_auc_score(y_true[:, g], y_score[:, g]) for g in in_macro]
    aps = [average_precision_score(y_true[:, g], y_score[:, g]) for g in in_macro]
    return {
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "macro_average_precision": float(np.mean(aps)) if aps else None,
        "micro_roc_auc": None,
        "n_samples": len(y_true),
        "genres_in_macro": [genres[g] for g in in_macro],
        "per_genre": [{"genre": g} for g in genres],
        "baselines": {
            "prevalence": {"macro_roc_auc": 0.5, "macro_average_precision": float(np.mean(train_prevalence))}
        },
        "warnings": [],
    }


def _write_report(out_dir, metrics, *, model_info, history=None, y_true=None, y_score=None, genres=None):
    path = Path(out_dir) / "report.html"
    path.write_text(f"<html><body>{metrics.get('macro_roc_auc')}</body></html>")
    return path


STAND_INS = {
    "postergenre.evaluation.thresholds": {"tune_thresholds": _tune_thresholds},
    "postergenre.evaluation.metrics": {"evaluate_scores": _evaluate_scores},
    "postergenre.evaluation.report": {"write_report": _write_report},
}


def install_doubles(monkeypatch, folder: Path) -> None:
    """Fake features and ONNX export always; evaluation stand-ins where the real modules are missing."""
    import postergenre.features as features
    import postergenre.features.onnx_export as onnx_export

    monkeypatch.setattr(features, "extract_features", fake_extract_features, raising=False)
    monkeypatch.setattr(features, "default_preprocessing", fake_preprocessing, raising=False)
    monkeypatch.setattr(onnx_export, "export_backbone", make_fake_export(folder))
    for name, functions in STAND_INS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            for attr, function in functions.items():
                setattr(module, attr, function)
            monkeypatch.setitem(sys.modules, name, module)


def cli_main(monkeypatch, argv: list[str]) -> int:
    """``postergenre ARGV`` with only this helper's commands registered (others may not be merged yet)."""
    import postergenre.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", ["train", "evaluate", "predict"])
    return cli.main(argv)
