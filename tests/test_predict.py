"""Predicting with a saved run: ONNX backbone plus NumPy head, bad images skipped, CLI formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_poster
from training_doubles import cli_main, fake_extract_features, fake_preprocessing, write_fake_onnx

from postergenre.inference.predictor import Predictor, SavedModel
from postergenre.training.heads import create_head
from postergenre.training.run import save_model

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
REPO = Path(__file__).resolve().parents[1]


def make_run(folder: Path, *, kind: str = "linear", flip: bool = False) -> Path:
    """A run folder with a random head over the fake 12-number features and the matching ONNX backbone."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    head = create_head(kind, 12, len(GENRES), hidden=5)
    head.set_standardisation(np.random.default_rng(0).normal(0, 0.3, size=(50, 12)))
    head.logit_offset.copy_(torch.linspace(-1, 1, len(GENRES)))
    info = {
        "name": folder.name,
        "mode": "multilabel",
        "head": head.describe(),
        "backbone": "fake",
        "preprocessing": fake_preprocessing().to_dict(),
        "flip": flip,
        "genres": GENRES,
        "thresholds": [0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0.2],
        "train_prevalence": [0.2] * len(GENRES),
        "text": False,
        "postergenre_version": "0.1.0",
    }
    save_model(folder, head, info)
    write_fake_onnx(folder / "backbone.onnx")
    return folder


@pytest.fixture
def posters(tmp_path) -> Path:
    """A folder of three posters and one corrupt file."""
    folder = tmp_path / "posters"
    folder.mkdir()
    for k in range(3):
        write_poster(folder / f"p{k}.jpg", seed=k, size=(30 + 10 * k, 45 + 10 * k))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


@pytest.mark.parametrize("kind", ["linear", "mlp", "per_genre_mlp"])
@pytest.mark.parametrize("flip", [False, True])
def test_predict_images_matches_training_features(tmp_path, posters, kind, flip):
    """Check that ONNX plus NumPy head gives the probabilities of the head on training-time features."""
    run = make_run(tmp_path / "run", kind=kind, flip=flip)
    paths = sorted(posters.iterdir())
    frame = Predictor.load(run).predict_images(paths, batch_size=2)

    good = [p for p in paths if p.name != "broken.jpg"]
    assert list(frame.index) == [str(p) for p in good]
    assert list(frame.attrs["failed"]) == [str(posters / "broken.jpg")]
    features = fake_extract_features({p.name: p for p in good}, "fake", flip=flip).values
    expected = SavedModel.load(run).probabilities(features)
    np.testing.assert_allclose(frame[GENRES].to_numpy(), expected, rtol=1e-4, atol=1e-6)
    thresholds = np.array([0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0.2])
    for (_, row), probs in zip(frame.iterrows(), expected, strict=True):
        assert row["predicted"] == [g for g, p, t in zip(GENRES, probs, thresholds, strict=True) if p >= t]


def test_load_rejects_incomplete_run(tmp_path):
    """Check that a folder without a saved model is an error that says how to make one."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a finished run folder"):
        Predictor.load(tmp_path / "empty")
    run = make_run(tmp_path / "run")
    (run / "backbone.onnx").unlink()
    with pytest.raises(ValueError, match=r"backbone\.onnx: not found"):
        Predictor.load(run)


def test_cli_predict_table_skips_bad_images(monkeypatch, tmp_path, posters, capsys):
    """Check that predict scores a folder, shows genres and top-K, and reports the corrupt file on stderr."""
    run = make_run(tmp_path / "run")
    assert cli_main(monkeypatch, ["predict", str(run), str(posters), "--top", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["image", "genres", "top"]
    assert [line.split()[0] for line in lines[1:]] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert all(line.count(", ") >= 1 for line in lines[1:])  # two top genres each
    assert "skipped" in captured.err and "broken.jpg" in captured.err


def test_cli_predict_json_and_csv(monkeypatch, tmp_path, posters, capsys):
    """Check the json and csv formats: every probability, predicted genres and top-K per image."""
    run = make_run(tmp_path / "run")
    image = str(posters / "p1.jpg")
    assert cli_main(monkeypatch, ["predict", str(run), image, "--format", "json", "--top", "4"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["image"] == image and set(record["probabilities"]) == set(GENRES)
    assert len(record["top"]) == 4
    top = [t["probability"] for t in record["top"]]
    assert top == sorted(top, reverse=True) and top[0] == max(record["probabilities"].values())

    assert cli_main(monkeypatch, ["predict", str(run), image, str(posters / "p0.jpg"), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["image"] for r in rows] == [image, str(posters / "p0.jpg")]
    assert all(0 <= float(r["Drama"]) <= 1 for r in rows)
    assert rows[0]["genres"] == ";".join(record["genres"])


def test_cli_predict_fails_when_nothing_scored(monkeypatch, tmp_path, posters, capsys):
    """Check that predict exits non-zero with a clear error when no image could be scored."""
    run = make_run(tmp_path / "run")
    code = cli_main(monkeypatch, ["predict", str(run), str(posters / "broken.jpg"), str(tmp_path / "nope.jpg")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.jpg: no such file or folder" in err and "no image could be scored" in err


def test_predict_does_not_import_torch(tmp_path, posters):
    """Check that a whole predict command runs without importing torch (fast start-up)."""
    run = make_run(tmp_path / "run")
    code = (
        "import sys\n"
        "import postergenre.cli as cli\n"
        "cli.COMMANDS = ['train', 'evaluate', 'predict']\n"
        f"assert cli.main(['predict', {str(run)!r}, {str(posters / 'p0.jpg')!r}]) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
