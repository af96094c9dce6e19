"""postergenre train and evaluate: the run folder, its files, and evaluation on other datasets."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from conftest import random_labels, write_dataset
from safetensors.numpy import load_file
from training_doubles import cli_main, install_doubles

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
FAST = ["--epochs", "5", "--patience", "3", "--min-positives", "3", "--no-text"]
MODEL_FIELDS = {
    "name",
    "mode",
    "head",
    "backbone",
    "weights",
    "preprocessing",
    "flip",
    "genres",
    "thresholds",
    "train_prevalence",
    "prior_correction",
    "text",
    "postergenre_version",
    "created",
}


@pytest.fixture
def doubles(monkeypatch, tmp_path):
    install_doubles(monkeypatch, tmp_path)


@pytest.fixture
def dataset(tmp_path):
    """Eighty posters over seven genres."""
    return write_dataset(tmp_path / "data", random_labels(80, GENRES, seed=1), GENRES)


def train(monkeypatch, dataset, run, *extra) -> int:
    return cli_main(monkeypatch, ["-q", "train", str(dataset), "--out", str(run), *FAST, *extra])


def test_train_writes_complete_run_folder(doubles, monkeypatch, dataset, tmp_path, capsys):
    """Check that train writes every run file, with the model described in model.json and nothing pickled."""
    run = tmp_path / "run"
    assert train(monkeypatch, dataset, run) == 0

    names = {p.name for p in run.iterdir()}
    expected = {
        "config.json",
        "split.csv",
        "history.csv",
        "model.safetensors",
        "model.json",
        "backbone.onnx",
        "validation_predictions.csv",
        "metrics.json",
        "report.html",
    }
    assert expected <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin"))]
    info = json.loads((run / "model.json").read_text())
    assert set(info) >= MODEL_FIELDS
    assert info["text"] is None and info["flip"] is False  # --no-text; flip off is the measured default
    assert len(info["thresholds"]) == len(info["genres"]) == len(info["train_prevalence"]) == 7
    assert info["head"] == {"type": "mlp", "num_features": 12, "num_genres": 7, "hidden": 256, "dropout": 0.7}
    tensors = load_file(str(run / "model.safetensors"))
    assert tensors["hidden.weight"].shape == (256, 12) and tensors["fc.weight"].shape == (7, 256)
    assert tensors["feature_mean"].shape == (12,) and tensors["logit_offset"].shape == (7,)
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0 and config["min_positives"] == 3 and config["dataset"]["csv"].endswith("train.csv")
    assert "torch" in config["versions"]
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns[:4]) == ["epoch", "loss", "val_macro_auc", "val_balanced_accuracy"]
    assert 1 <= len(history) <= 5
    split = pd.read_csv(run / "split.csv", index_col="Id")
    assert set(split["split"]) == {"train", "validation", "test"} and len(split) == 80
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"]["split"] == "test"
    assert metrics["n_samples"] == (split["split"] == "test").sum()
    out = capsys.readouterr().out
    assert "macro ROC-AUC" in out and "prevalence baseline" in out and "report.html" in out


def test_train_refuses_to_overwrite_a_run(doubles, monkeypatch, dataset, tmp_path, capsys):
    """Check that a second train into a finished run folder fails with a one-line error."""
    run = tmp_path / "run"
    train(monkeypatch, dataset, run)
    assert train(monkeypatch, dataset, run) == 2
    assert "already holds a trained run" in capsys.readouterr().err


def test_same_seed_gives_same_model_and_split_file_is_reused(doubles, monkeypatch, dataset, tmp_path):
    """Check that one seed gives identical weights, and --split reuses the given test set."""
    train(monkeypatch, dataset, tmp_path / "a", "--mode", "per-genre")
    train(monkeypatch, dataset, tmp_path / "b", "--mode", "per-genre")
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("a", "b"))
    assert all(np.array_equal(a[k], b[k]) for k in a)

    train(
        monkeypatch,
        dataset,
        tmp_path / "c",
        "--mode",
        "per-genre",
        "--seed",
        "5",
        "--split",
        str(tmp_path / "a" / "split.csv"),
    )
    split_a = pd.read_csv(tmp_path / "a" / "split.csv", index_col="Id")["split"]
    split_c = pd.read_csv(tmp_path / "c" / "split.csv", index_col="Id")["split"]
    assert split_a.equals(split_c)
    c = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert not np.array_equal(a["hidden.weight"], c["hidden.weight"])


def test_genre_missing_from_train_split_warns_and_trains(doubles, monkeypatch, tmp_path, caplog):
    """Check that a genre with no training positive is warned about and the run still finishes."""
    labels = random_labels(60, GENRES[:-1], seed=2)
    western = list(labels)[:4]
    for id_ in western:
        labels[id_] = [*labels[id_], "Western"]
    dataset = write_dataset(tmp_path / "data", labels, GENRES)
    sides = ["train"] * 36 + ["validation"] * 12 + ["test"] * 12
    split = pd.DataFrame({"split": sides[4:] + ["test"] * 4}, index=pd.Index(list(labels)[4:] + western, name="Id"))
    split.to_csv(tmp_path / "split.csv")

    with caplog.at_level(logging.WARNING):
        code = train(monkeypatch, dataset, tmp_path / "run", "--split", str(tmp_path / "split.csv"))
    assert code == 0
    assert "no positive poster in the train split (Western)" in caplog.text
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert np.isfinite(info["thresholds"]).all()


def test_evaluate_another_dataset_matches_genres_by_name(doubles, monkeypatch, dataset, tmp_path, capsys):
    """Check that evaluate on a dataset with other genres scores the shared ones and reports the rest."""
    run = tmp_path / "run"
    train(monkeypatch, dataset, run)
    other_genres = ["Drama", "Documentary", "Comedy", "Action"]
    other = write_dataset(tmp_path / "other", random_labels(30, other_genres, seed=3), other_genres)
    capsys.readouterr()

    assert cli_main(monkeypatch, ["-q", "evaluate", str(run), str(other)]) == 0
    metrics = json.loads((run / "evaluation-other" / "metrics.json").read_text())
    assert metrics["dataset"]["split"] == "all" and metrics["n_samples"] == 30
    assert metrics["skipped_genres"]["not_in_model"] == ["Documentary"]
    assert metrics["skipped_genres"]["not_in_data"] == ["Horror", "Romance", "Sci-Fi", "Western"]
    assert [row["genre"] for row in metrics["per_genre"]] == ["Action", "Comedy", "Drama"]
    assert (run / "evaluation-other" / "report.html").is_file()
    out = capsys.readouterr().out
    assert "Documentary" in out and "Western" in out


def test_evaluate_defaults_to_the_runs_test_split(doubles, monkeypatch, dataset, tmp_path):
    """Check that evaluate RUN alone re-scores the run's own test split, without calling the genres
    left out at training unknown."""
    run = tmp_path / "run"
    train(monkeypatch, dataset, run, "--min-positives", "25")
    dropped = json.loads((run / "config.json").read_text())["dropped_genres"]
    assert dropped and not set(dropped) & set(json.loads((run / "model.json").read_text())["genres"])

    assert cli_main(monkeypatch, ["-q", "evaluate", str(run), "--out", str(tmp_path / "again")]) == 0
    first = json.loads((run / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["dataset"]["split"] == "test"
    assert again["macro_roc_auc"] == pytest.approx(first["macro_roc_auc"])
    assert again["skipped_genres"] == {"not_in_data": [], "not_in_model": []}


def test_evaluate_rejects_dataset_without_shared_genres(doubles, monkeypatch, dataset, tmp_path, capsys):
    """Check that a dataset sharing no genre with the model is an error naming both genre lists."""
    run = tmp_path / "run"
    train(monkeypatch, dataset, run)
    other = write_dataset(tmp_path / "other", random_labels(10, ["News", "Short"], max_labels=2), ["News", "Short"])
    assert cli_main(monkeypatch, ["-q", "evaluate", str(run), str(other)]) == 2
    assert "shares no genre with the model" in capsys.readouterr().err


def test_command_line_choices_match_the_library():
    """Check that the names the command line offers without importing the library are the library's."""
    from postergenre.cli.train import RESIZE_POLICIES
    from postergenre.data.genres import DEFAULT_MIN_POSITIVES
    from postergenre.models import preprocessing
    from postergenre.training.config import TrainConfig

    assert RESIZE_POLICIES == preprocessing.RESIZE_POLICIES
    assert TrainConfig().min_positives == DEFAULT_MIN_POSITIVES


def test_bad_input_size_is_a_usage_error(monkeypatch, capsys):
    """Check that --input-size must look like HEIGHTxWIDTH."""
    with pytest.raises(SystemExit):
        cli_main(monkeypatch, ["train", "--out", "x", "--input-size", "big"])
    assert "expected HEIGHTxWIDTH" in capsys.readouterr().err


def test_pooled_stages_travel_from_training_to_evaluation_and_explanation(monkeypatch, dataset, tmp_path):
    """Check a real lite0 run records its pooled stages in model.json (3 by default, 0 when asked), its
    backbone.onnx gives features of that width, evaluate re-extracts them and matches train, explain builds
    the same backbone, and a model.json written before pooled stages existed still means 0."""
    import onnxruntime as ort

    from postergenre.explain.classifier import load_classifier

    size = ["--input-size", "64x32"]
    widths = {}
    for pooled, run in ((None, tmp_path / "pooled"), ("0", tmp_path / "alone")):
        extra = [*size, *(["--pooled-stages", pooled] if pooled else [])]
        assert train(monkeypatch, dataset, run, *extra) == 0
        info = json.loads((run / "model.json").read_text())
        session = ort.InferenceSession(str(run / "backbone.onnx"), providers=["CPUExecutionProvider"])
        (features,) = session.run(None, {"input": np.zeros((1, 3, 64, 32), np.float32)})
        widths[info["pooled_stages"]] = (info["head"]["num_features"], features.shape[1])
        assert load_classifier(run).backbone.pooled_stages == info["pooled_stages"]
        trained = json.loads((run / "metrics.json").read_text())["macro_roc_auc"]
        assert cli_main(monkeypatch, ["-q", "evaluate", str(run), "--out", str(run / "again")]) == 0
        again = json.loads((run / "again" / "metrics.json").read_text())["macro_roc_auc"]
        assert again == pytest.approx(trained, abs=1e-6)
    assert widths == {3: (1904, 1904), 0: (1280, 1280)}

    alone = tmp_path / "alone"
    info = json.loads((alone / "model.json").read_text())
    del info["pooled_stages"]
    (alone / "model.json").write_text(json.dumps(info))
    assert load_classifier(alone).backbone.num_features == 1280
    assert cli_main(monkeypatch, ["-q", "evaluate", str(alone), "--out", str(alone / "old")]) == 0


def test_pooled_stages_refused_where_only_the_last_stage_is_pooled():
    """Check --pooled-stages is refused with fine-tuning and with the from-scratch CNN, and must not be negative."""
    from postergenre.training.config import TrainConfig

    with pytest.raises(ValueError, match="--fine-tune pools the last stage only"):
        TrainConfig(fine_tune=1, pooled_stages=2)
    with pytest.raises(ValueError, match="custom_cnn pools the last stage only"):
        TrainConfig(backbone="custom_cnn", pooled_stages=1, text="off")
    with pytest.raises(ValueError, match="0 or more"):
        TrainConfig(pooled_stages=-1)
