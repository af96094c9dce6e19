"""Training the custom CNN end to end on the posters: run folder, ONNX parity, augmentation, seeding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import random_labels, write_dataset
from training_doubles import cli_main

from postergenre.training.augment import augment_batch
from postergenre.training.config import TrainConfig
from postergenre.training.images import MatmulAdaptivePool, fit_images

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
SMALL = {"input_size": (64, 64), "epochs": 2, "min_positives": 3, "min_test_positives": 1, "lr": 1e-3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One augmented custom-CNN run on forty posters at 64x64, shared by the tests that only read it."""
    from postergenre.data.dataset import load_dataset
    from postergenre.training.run import train_run

    root = tmp_path_factory.mktemp("customcnn")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSTERGENRE_CACHE_DIR", str(root / "cache"))
        data = write_dataset(root / "data", random_labels(40, GENRES), GENRES)
        config = TrainConfig(backbone="custom_cnn", augment=True, **SMALL)
        result = train_run(load_dataset(data), config, root / "run", progress=False)
        yield result, data


def test_run_folder_is_complete(trained):
    """Check that the run folder holds the usual files plus the trained backbone, and model.json says so."""
    result, _ = trained
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"model.json", "model.safetensors", "backbone.onnx", "backbone.safetensors", "metrics.json"} <= names
    info = json.loads((result.run_dir / "model.json").read_text())
    assert info["backbone"] == "custom_cnn"
    assert info["augment"] is True and info["trained_backbone"] is True
    assert info["preprocessing"]["input_size"] == [64, 64]
    history = (result.run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,val_macro_auc,val_balanced_accuracy") and len(history) == 3


def test_predict_equals_trained_torch_model(trained):
    """Check that predicting from the run folder (ONNX) gives the trained PyTorch model's probabilities."""
    from postergenre.data.images import open_rgb
    from postergenre.inference.predictor import Predictor
    from postergenre.models.backbones import create_backbone
    from postergenre.training.run import load_head

    result, data = trained
    paths = sorted((data / "images").iterdir())[:6]
    scores = Predictor.load(result.run_dir).score_paths(paths)

    head, info = load_head(result.run_dir)
    backbone = create_backbone("custom_cnn", weights=result.run_dir / "backbone.safetensors").eval()
    predictor = Predictor.load(result.run_dir)
    batch = torch.from_numpy(np.stack([predictor.preprocessing(open_rgb(p)) for p in paths]))
    with torch.no_grad():
        expected = torch.sigmoid(head(backbone(batch))).numpy()
    assert scores.probabilities.shape == (6, len(info["genres"]))
    np.testing.assert_allclose(scores.probabilities, expected, atol=1e-4)


def test_evaluate_repeats_the_training_evaluation(trained, tmp_path):
    """Check that evaluating the saved run scores the test split as the training run's own evaluation did."""
    from postergenre.training.run import evaluate_run

    result, _ = trained
    again = evaluate_run(result.run_dir, out_dir=tmp_path / "again", progress=False)
    assert again.metrics["n_samples"] == result.evaluation.metrics["n_samples"]
    assert again.metrics["macro_roc_auc"] == pytest.approx(result.evaluation.metrics["macro_roc_auc"], abs=1e-6)


def test_augment_changes_pixels_keeps_shape_and_repeats_with_seed():
    """Check that augmentation changes pixels, keeps shape and dtype, and repeats for the same seed."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 48, 32, 3), dtype=np.uint8)
    first = augment_batch(pixels, np.random.default_rng(1))
    assert first.shape == pixels.shape and first.dtype == np.uint8
    assert not np.array_equal(first, pixels)
    np.testing.assert_array_equal(first, augment_batch(pixels, np.random.default_rng(1)))


def test_seeded_training_repeats_exactly():
    """Check that two trainings with the same seed give the same history and the same weights."""
    from postergenre.models.backbones import create_backbone

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=(16, 3)).astype(np.int8)
    config = TrainConfig(backbone="custom_cnn", augment=True, epochs=2, batch_size=8, lr=1e-3)
    preprocessing = create_backbone("custom_cnn", pretrained=False).preprocessing.with_policy("stretch", (32, 32))
    runs = [fit_images(config, preprocessing, (pixels, labels), (pixels, labels), progress=False) for _ in range(2)]
    assert [r["loss"] for r in runs[0].history] == [r["loss"] for r in runs[1].history]
    for (name, a), b in zip(runs[0].backbone.state_dict().items(), runs[1].backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("in_size", [(8, 8), (16, 12), (37, 37)])
def test_matmul_pool_equals_adaptive_pool(in_size):
    """Check that the exportable pool computes what nn.AdaptiveAvgPool2d computes, for grids up and down."""
    x = torch.randn(2, 4, *in_size)
    expected = torch.nn.AdaptiveAvgPool2d((37, 37))(x)
    torch.testing.assert_close(MatmulAdaptivePool(in_size, (37, 37))(x), expected, atol=1e-5, rtol=1e-5)


def test_augment_with_a_pretrained_backbone_is_refused(monkeypatch, tiny_dataset, tmp_path, capsys):
    """Check that --augment on cached features stops with one line naming the image backbone."""
    code = cli_main(monkeypatch, ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--augment"])
    assert code == 2
    assert "augment applies to training on images (--backbone custom_cnn)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="augment applies to training on images"):
        TrainConfig(backbone="mobilenet_v2", augment=True)
