"""Poster text fused with the image: training choices, model.json, and predict/evaluate/serve with text."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import random_labels, write_dataset
from PIL import Image, ImageDraw, ImageFont
from training_doubles import cli_main, install_doubles

from postergenre.errors import PosterGenreError
from postergenre.training import fusion
from postergenre.training.config import TrainConfig

# The word each genre's posters show; the pictures behind them are noise, so only the text tells genres apart.
WORDS = {"Horror": "FEAR", "Romance": "LOVE", "Comedy": "LAUGH"}
N_POSTERS = 30
FAST = {"epochs": 40, "patience": 8, "lr": 3e-3, "min_positives": 3, "min_test_positives": 2}

needs_text = pytest.mark.skipif(not fusion.text_extra_installed(), reason="needs the text extra")


def write_word_poster(path: Path, word: str, seed: int) -> None:
    """A small dark poster with ``word`` in large white bold letters (readable by OCR in a fraction of a second)."""
    import matplotlib

    font = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), 30)
    rng = np.random.default_rng(seed)
    # A dark random blotch pattern: different pictures for the duplicate finder, no word-like edges for OCR.
    blotches = Image.fromarray(rng.integers(0, 110, size=(6, 4, 3), dtype=np.uint8))
    image = blotches.resize((160, 240), Image.Resampling.BICUBIC)
    ImageDraw.Draw(image).text((15, 40), word, font=font, fill=(250, 250, 250))
    image.save(path, quality=92)


def write_text_dataset(root: Path) -> Path:
    genres = list(WORDS)
    labels = {f"tt{k:07d}": [genres[k % len(genres)]] for k in range(N_POSTERS)}
    write_dataset(root, labels, genres)
    for k, (id_, (genre,)) in enumerate(labels.items()):
        write_word_poster(root / "images" / f"{id_}.jpg", WORDS[genre], seed=k)
    return root


@pytest.fixture(scope="module")
def doubles(tmp_path_factory):
    """Fake image features and ONNX backbone for the whole module; a cache folder shared by its tests.

    The OCR of the posters and the sentence model are the real ones: they are what is under test.
    """
    patch = pytest.MonkeyPatch()
    # The same folder conftest's autouse fixture gives every test, so OCR done here is cached for them.
    patch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    install_doubles(patch, tmp_path_factory.mktemp("onnx"))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("textdata") / "data")


@pytest.fixture(scope="module")
def text_run(doubles, text_data, tmp_path_factory) -> Path:
    """One run trained with text on (OCR and sentence model once for the module); tests only read it."""
    from postergenre.data.dataset import load_dataset
    from postergenre.training.run import train_run

    run = tmp_path_factory.mktemp("textrun") / "run"
    # Without a refit, the saved heads are those whose validation predictions the run wrote: prediction
    # can then be checked against them (test_refit_trains_the_fused_heads_again covers the refit).
    config = TrainConfig(text="on", fusion="auto", refit=False, **FAST)
    train_run(load_dataset(text_data), config, run, progress=False)
    return run


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@needs_text
def test_text_run_records_settings_and_the_choice(text_run):
    """Check model.json and config.json record the text settings and the validation figures of each candidate."""
    from postergenre.text.ocr import OcrSettings

    info = read_json(text_run / "model.json")
    text, choice = info["text"], info["text_choice"]
    assert text["fusion"] == choice["chosen"] in ("concat", "late")
    assert text["ocr"] == OcrSettings().to_dict() and text["min_confidence"] == fusion.MIN_CONFIDENCE
    assert text["embedding"]["model"] == "sentence-transformers/all-MiniLM-L6-v2" and text["embedding"]["version"]
    assert choice["candidates"] == ["concat", "late"]  # text=on: the image alone does not compete
    assert set(choice["validation"]) == {"image", "text", "concat", "late"}
    best = max(choice["candidates"], key=lambda name: choice["validation"][name]["macro_auc"])
    assert choice["chosen"] == best
    assert 0.0 <= choice["late_weight"] <= 1.0
    # The words carry the genres and the pictures do not: text must read them.
    assert choice["validation"]["text"]["macro_auc"] > 0.8 > choice["validation"]["image"]["macro_auc"]
    assert choice["posters_with_text"] == N_POSTERS
    assert read_json(text_run / "config.json")["text_choice"] == choice
    assert (text_run / "text_head.safetensors").is_file() == (text["fusion"] == "late")
    report = (text_run / "report.html").read_text()
    assert "Poster text" in report and f"{choice['validation']['late']['macro_auc']:.3f}" in report


@needs_text
def test_refit_trains_the_fused_heads_again(doubles, text_data, tmp_path):
    """Check a refit late-fusion run records the epochs of both heads, trained on train + validation, and
    that its saved heads are new ones: validation probabilities differ from the first heads' predictions."""
    from postergenre.data.dataset import load_dataset
    from postergenre.inference.predictor import Predictor
    from postergenre.training.run import train_run

    run = tmp_path / "run"
    train_run(load_dataset(text_data), TrainConfig(text="on", fusion="late", **FAST), run, progress=False)
    info = read_json(run / "model.json")
    split = pd.read_csv(run / "split.csv", index_col=0)["split"]
    assert info["refit"]["posters"] == int((split != "test").sum())
    assert info["refit"]["epochs"] == {"image": info["best_epoch"], "text": info["refit"]["epochs"]["text"]}
    assert 1 <= info["refit"]["epochs"]["text"] <= FAST["epochs"]
    assert read_json(run / "config.json")["refit"] is True
    saved = pd.read_csv(run / "validation_predictions.csv", index_col="Id")
    scores = Predictor.load(run).score_paths([text_data / "images" / f"{id_}.jpg" for id_ in saved.index])
    assert np.abs(scores.probabilities - saved.to_numpy()).max() > 1e-3


@needs_text
def test_prediction_reads_the_text_as_training_did(text_run, text_data, capsys, monkeypatch):
    """Check Predictor on validation posters gives the probabilities training saved, and predict prints timings."""
    from postergenre.inference.predictor import Predictor

    saved = pd.read_csv(text_run / "validation_predictions.csv", index_col="Id")
    paths = [text_data / "images" / f"{id_}.jpg" for id_ in saved.index]
    scores = Predictor.load(text_run).score_paths(paths)

    np.testing.assert_allclose(scores.probabilities, saved.to_numpy(), atol=1e-4)
    assert scores.timings["ocr"] > 0 and scores.timings["ocr_cached"] == len(paths)

    assert cli_main(monkeypatch, ["predict", str(text_run), str(paths[0])]) == 0
    assert "timings: OCR and text" in capsys.readouterr().err


@needs_text
def test_evaluation_reads_text_on_own_and_other_datasets(text_run, text_data, tmp_path):
    """Check re-evaluation reproduces the run's test figures, and another dataset is scored with its text."""
    from postergenre.data.dataset import load_dataset
    from postergenre.training.run import evaluate_run

    again = evaluate_run(text_run, out_dir=tmp_path / "again", progress=False)
    assert again.metrics["macro_roc_auc"] == pytest.approx(read_json(text_run / "metrics.json")["macro_roc_auc"])

    other = tmp_path / "other"
    shutil.copytree(text_data, other)
    evaluation = evaluate_run(text_run, load_dataset(other), progress=False)
    assert evaluation.metrics["dataset"]["n_posters"] == N_POSTERS
    assert evaluation.metrics["macro_roc_auc"] > 0.8  # only the text can score these posters this well


@needs_text
def test_serve_response_carries_ocr_timings(text_run, text_data):
    """Check the web service scores a text model's poster as Predictor does and reports OCR time."""
    from fastapi.testclient import TestClient

    from postergenre.inference.predictor import Predictor
    from postergenre.serve.app import create_app

    path = text_data / "images" / "tt0000000.jpg"
    expected = Predictor.load(text_run).score_paths([path]).probabilities[0]
    with TestClient(create_app(text_run)) as client:
        response = client.post("/api/predict", files={"file": ("p.jpg", path.read_bytes(), "image/jpeg")})
        model = client.get("/api/model").json()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timings"]["ocr_ms"] > 0 and body["timings"]["image_ms"] > 0
    np.testing.assert_allclose([g["probability"] for g in body["genres"]], expected, atol=1e-4)
    assert model["text"] == read_json(text_run / "model.json")["text"]["fusion"]


@needs_text
def test_auto_keeps_the_best_of_image_concat_and_late_on_validation(doubles, text_data, text_run, tmp_path):
    """Check text=auto lets the image alone compete and keeps the candidate with the best validation AUC."""
    from postergenre.data.dataset import load_dataset
    from postergenre.evaluation.compare import compare_runs
    from postergenre.training.run import train_run

    run = tmp_path / "auto"
    train_run(load_dataset(text_data), TrainConfig(fusion="auto", **FAST), run, progress=False)  # OCR cached

    choice = read_json(run / "model.json")["text_choice"]
    assert choice["candidates"] == ["image", "concat", "late"]
    assert choice["chosen"] == max(choice["candidates"], key=lambda name: choice["validation"][name]["macro_auc"])
    assert choice["chosen"] != "image"  # the words carry the genres

    off = tmp_path / "off"
    train_run(load_dataset(text_data), TrainConfig(text="off", **FAST), off, progress=False)
    headline = compare_runs([run, off]).headline
    assert list(headline["text"]) == [choice["chosen"], "no"]


def test_late_weight_follows_the_informative_logits():
    """Check the late-fusion weight lies in [0, 1] and leans to whichever logits rank validation posters right."""
    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 2, size=(200, 3))
    signal, noise = y_val + rng.normal(0, 0.3, size=y_val.shape), rng.normal(0, 1, size=y_val.shape)

    assert fusion.tune_late_weight(y_val, signal, noise) == 1.0
    assert fusion.tune_late_weight(y_val, noise, signal) == 0.0
    half = y_val + rng.normal(0, 1.0, size=y_val.shape)
    other_half = y_val + rng.normal(0, 1.0, size=y_val.shape)
    assert 0.0 < fusion.tune_late_weight(y_val, half, other_half) < 1.0


def train_tiny(monkeypatch, tmp_path, name: str, **settings) -> dict:
    """A run on forty random-colour posters with fake features; returns its model.json."""
    from postergenre.data.dataset import load_dataset
    from postergenre.training.run import train_run

    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
    data = tmp_path / "tiny"
    if not data.exists():
        write_dataset(data, random_labels(40, genres), genres)
    install_doubles(monkeypatch, tmp_path)
    config = TrainConfig(epochs=5, patience=3, min_positives=3, **settings)
    train_run(load_dataset(data), config, tmp_path / name, progress=False)
    return read_json(tmp_path / name / "model.json")


def test_auto_without_the_extra_trains_the_image_model_that_off_trains(monkeypatch, tmp_path, caplog):
    """Check text=auto without the text extra logs one line and saves exactly what text=off saves."""
    from safetensors.numpy import load_file

    monkeypatch.setattr(fusion, "text_extra_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger="postergenre.training.fusion"):
        auto = train_tiny(monkeypatch, tmp_path, "auto")
    off = train_tiny(monkeypatch, tmp_path, "off", text="off")

    assert [r.message for r in caplog.records if "text extra" in r.message] == [
        "poster text: the text extra is not installed; the model reads the image only (pip install 'postergenre[text]')"
    ]
    assert auto["text"] is None and off["text"] is None
    assert auto["text_choice"] == {"setting": "auto", "chosen": "image"}
    assert auto["thresholds"] == off["thresholds"]
    first, second = (
        load_file(str(tmp_path / "auto" / "model.safetensors")),
        load_file(str(tmp_path / "off" / "model.safetensors")),
    )
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not (tmp_path / "off" / "text_head.safetensors").exists()


def test_text_on_without_the_extra_names_the_install(monkeypatch, tmp_path):
    """Check text=on without the text extra fails with the pip command, before any head is saved."""
    monkeypatch.setattr(fusion, "text_extra_installed", lambda: False)
    with pytest.raises(PosterGenreError, match=r"pip install 'postergenre\[text\]'"):
        train_tiny(monkeypatch, tmp_path, "on", text="on")
    assert not (tmp_path / "on" / "model.json").exists()


def test_predicting_with_a_text_model_without_the_extra_names_the_install(monkeypatch, tmp_path):
    """Check Predictor.load of a text model fails with the pip command when OCR is not installed."""
    from postergenre.inference import predictor
    from postergenre.text import ocr

    info = train_tiny(monkeypatch, tmp_path, "run", text="off")
    info["text"] = {"fusion": "concat", "ocr": {}, "min_confidence": 0.5}
    (tmp_path / "run" / "model.json").write_text(json.dumps(info))

    def missing():
        raise ImportError("no rapidocr")

    monkeypatch.setattr(ocr, "package_version", missing)
    with pytest.raises(PosterGenreError, match=r"reads poster text.*pip install 'postergenre\[text\]'"):
        predictor.Predictor.load(tmp_path / "run")


def test_config_and_command_line_text_settings(monkeypatch):
    """Check --text/--no-text/--fusion reach TrainConfig, and bad or impossible settings are refused."""
    import argparse

    from postergenre.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    parse = lambda *extra: train_cli.build_config(parser.parse_args(["train", "data", "--out", "r", *extra]))  # noqa: E731
    assert (parse().text, parse().fusion) == ("auto", "late")
    assert parse("--text", "--fusion", "concat").text == "on" and parse("--fusion", "auto").fusion == "auto"
    # By default the image alone competes with late fusion; --fusion auto adds a concat head.
    assert fusion.candidate_names(parse()) == ["image", "late"]
    assert fusion.candidate_names(parse("--text", "--fusion", "auto")) == ["concat", "late"]
    assert parse("--no-text").text == "off"
    with pytest.raises(SystemExit):
        parse("--text", "--no-text")
    with pytest.raises(ValueError, match="unknown text setting 'maybe'; expected one of auto, on, off"):
        TrainConfig(text="maybe")
    with pytest.raises(ValueError, match="use --no-text with it"):
        TrainConfig(backbone="custom_cnn", text="on")
