"""Fine-tuning the last K backbone stages (train --fine-tune K): prefix and tail, activation cache, run folder."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_dataset, write_poster
from PIL import Image
from safetensors.torch import load_file

from postergenre.explain.classifier import classifier_from_parts, load_classifier
from postergenre.explain.gradcam import grad_cam
from postergenre.features.activations import ACTIVATION_DTYPE, BackbonePrefix, cut_index
from postergenre.features.extract import load_input
from postergenre.inference.predictor import Predictor
from postergenre.models.backbones import create_backbone, get_spec, list_backbones
from postergenre.training import finetune
from postergenre.training.config import TrainConfig
from postergenre.training.heads import create_head
from postergenre.training.losses import create_loss

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]  # odd on purpose
TINY = (64, 48)  # (height, width)
# Every backbone with pretrained weights can be fine-tuned; the custom CNN trains all of itself instead.
FINE_TUNABLE = [name for name in list_backbones() if get_spec(name).weights != "none"]
N_POSTERS = 60
EPOCHS = 3  # for the warm start, then as many for tail and head together
# At the default lr (1e-4) three epochs barely move the head; 1e-3 gives the joint phase room to beat it.
FAST = ["--input-size", "64x48", "--epochs", str(EPOCHS), "--patience", "2", "--lr", "1e-3", "--min-positives", "3"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest's one_torch_thread)."""


def _backbone(name: str):
    """The backbone as fine-tuning builds it (the last stage pooled alone), with its bundled weights; random
    ones for those whose weights only the user has (the prefix/tail split does not depend on the values)."""
    return create_backbone(name, pretrained=get_spec(name).weights == "bundled", pooled_stages=0).eval()


def _batch(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, *TINY, generator=torch.Generator().manual_seed(seed))


def _tail(backbone, fine_tune: int) -> finetune.Tail:
    return finetune.Tail([module for _, module in backbone.stages()[cut_index(backbone, fine_tune) :]])


def _activations(backbone, fine_tune: int, x: torch.Tensor) -> finetune.Activations:
    """The float16 maps entering the tail, as the cache stores them (flattened rows)."""
    prefix = BackbonePrefix(backbone, cut_index(backbone, fine_tune), TINY)
    with torch.no_grad():
        values = prefix(x).numpy().astype(ACTIVATION_DTYPE)
    return finetune.Activations([f"p{k}" for k in range(len(x))], values, prefix.map_shape, {})


def _colour_labels(n: int) -> dict[str, list[str]]:
    """Genres that follow each poster's base colour (as conftest.write_poster draws it), so that training
    has something to learn and fine-tuning beats the warm-started head on validation."""
    labels = {}
    for k in range(n):
        r, g, b = np.random.default_rng(k).integers(0, 256, size=3)
        rules = [r > 128, g > 128, b > 128, r + g > 256, r < g, g < b, r < b]
        labels[f"tt{k:07d}"] = [genre for genre, on in zip(GENRES, rules, strict=True) if on]
    return labels


def _stage_keys(backbone, first: int) -> set[str]:
    """State dict keys of the backbone's stages from number ``first`` on."""
    names = {id(t): name for name, t in backbone.state_dict(keep_vars=True).items()}
    return {names[id(t)] for _, stage in backbone.stages()[first:] for t in stage.state_dict(keep_vars=True).values()}


# ---- prefix and tail -------------------------------------------------------------------------


@pytest.mark.parametrize("name", FINE_TUNABLE)
def test_prefix_then_tail_gives_the_backbones_features(name):
    """Check that for every K the prefix's maps through the tail are the whole backbone's pooled features."""
    backbone = _backbone(name)
    x = _batch()
    with torch.no_grad():
        expected = backbone(x)
        for fine_tune in range(1, len(backbone.stages()) + 1):
            prefix = BackbonePrefix(backbone, cut_index(backbone, fine_tune), TINY)
            maps = prefix(x)
            assert maps.shape == (len(x), prefix.num_features)
            features = _tail(backbone, fine_tune).eval()(maps.reshape(len(x), *prefix.map_shape))
            assert features.shape == (len(x), backbone.num_features)
            torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5, msg=f"K={fine_tune}")


@pytest.mark.parametrize("name", FINE_TUNABLE)
def test_training_step_changes_only_the_tail_and_head(name):
    """Check that a fine-tuning epoch gives gradients to and changes the tail and head only: the prefix and
    the tail's batch-norm statistics (kept in eval mode) stay as they were, and the change lands in the backbone."""
    backbone = _backbone(name)
    activations = _activations(backbone, 2, _batch(6))
    tail = _tail(backbone, 2)
    head = create_head("mlp", backbone.num_features, len(GENRES), hidden=16, dropout=0.0)
    model = finetune.TailWithHead(tail, head)
    # Every tensor that forward_features uses (VGG16's 120M-parameter ImageNet classifier is not one).
    keys = _stage_keys(backbone, 0)
    before = {k: v.clone() for k, v in backbone.state_dict().items() if k in keys}
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    optimizer = torch.optim.AdamW(
        [{"params": list(tail.parameters()), "lr": 1e-3}, {"params": list(head.parameters()), "lr": 1e-2}]
    )
    y = np.random.default_rng(0).integers(0, 2, size=(6, len(GENRES))).astype(np.int8)
    config = types.SimpleNamespace(batch_size=0)
    rng = np.random.default_rng(0)

    loss = finetune.train_one_epoch(
        model, create_loss("bce"), optimizer, activations, (np.arange(6), y), None, config, rng, False
    )

    assert np.isfinite(loss) and tail.training
    assert all(not m.training for m in tail.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    tail_keys = _stage_keys(backbone, cut_index(backbone, 2))
    trainable = {key for key, p in backbone.named_parameters() if p.requires_grad}
    after = backbone.state_dict()
    changed = {k for k in keys if not torch.equal(after[k], before[k])}
    assert changed == tail_keys & trainable
    for key, p in backbone.named_parameters():
        if key in tail_keys:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key
        else:
            assert p.grad is None, key
    for key, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
        assert not torch.equal(p, head_before[key]), key


@pytest.fixture
def tail_problem():
    """Lite0's last stage over the cached maps of ten random inputs, with labels for 7 genres: six posters to
    train on and four to validate on, each genre with both classes in validation."""
    backbone = _backbone("efficientnet_lite0")
    activations = _activations(backbone, 1, _batch(10))
    y = np.random.default_rng(1).integers(0, 2, size=(10, len(GENRES))).astype(np.int8)
    y[6], y[7] = 1, 0
    rows = np.arange(10)
    config = TrainConfig(fine_tune=1, epochs=2, patience=2, lr=1e-3, hidden=16)
    return types.SimpleNamespace(
        backbone=backbone, activations=activations, config=config, train=(rows[:6], y[:6]), validation=(rows[6:], y[6:])
    )


def test_fit_tail_trains_the_tail_at_a_tenth_of_the_heads_learning_rate(tail_problem, monkeypatch):
    """Check that the joint phase's optimizer trains the tail's parameters at a tenth of the head's learning
    rate, and that fit_tail returns a head with finite logits for 7 genres."""
    p = tail_problem
    tail = _tail(p.backbone, 1)
    optimizers = []

    class RecordedAdamW(torch.optim.AdamW):
        def __init__(self, params, *args, **kwargs):
            super().__init__(params, *args, **kwargs)
            optimizers.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", RecordedAdamW)
    result = finetune.fit_tail(tail, p.config, p.activations, p.train, p.validation, progress=False)

    joint = [o for o in optimizers if len(o.param_groups) == 2]
    assert len(joint) == 1
    tail_group, head_group = joint[0].param_groups
    assert {id(t) for t in tail_group["params"]} == {id(t) for t in tail.parameters()}
    assert {id(t) for t in head_group["params"]} == {id(t) for t in result.head.parameters()}
    assert head_group["lr"] == pytest.approx(1e-3)
    assert tail_group["lr"] == pytest.approx(0.1 * head_group["lr"])
    logits = finetune.predict_tail_logits(finetune.TailWithHead(tail, result.head), p.activations, np.arange(10))
    assert logits.shape == (10, len(GENRES)) and np.isfinite(logits).all()


def test_tail_that_never_beats_the_warm_start_is_left_as_it_was(tail_problem, monkeypatch):
    """Check that when no joint epoch beats the warm-started head on validation, the pretrained tail is
    restored, the warm start's epoch is kept and the run warns that --fine-tune 0 would do."""
    p = tail_problem
    tail = _tail(p.backbone, 1)
    pretrained = {k: v.clone() for k, v in tail.state_dict().items()}
    val_rows, y_val = p.validation

    def wrong_logits(model, activations, rows):
        # Every genre ranked backwards: validation AUC 0 in each joint epoch.
        assert np.array_equal(rows, val_rows)
        return -y_val.astype(np.float32)

    monkeypatch.setattr(finetune, "predict_tail_logits", wrong_logits)
    result = finetune.fit_tail(tail, p.config, p.activations, p.train, p.validation, progress=False)

    assert result.best_epoch <= p.config.epochs and len(result.history) == 2 * p.config.epochs
    assert all(torch.equal(tail.state_dict()[k], v) for k, v in pretrained.items())
    assert any("never beat the head alone" in w and "--fine-tune 0" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"backbone": "custom_cnn", "fine_tune": 1}, "trains all of itself"),
        ({"fine_tune": 10}, r"expected 0 \(frozen\) to 9"),
        ({"fine_tune": -1}, r"expected 0 \(frozen\) to 9"),
        ({"fine_tune": 1, "flip": True}, "drop --flip"),
    ],
)
def test_fine_tune_settings_that_cannot_work_are_refused(settings, match):
    """Check that --fine-tune must name a tail of a pretrained backbone's stages, without --flip; the error says so."""
    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


def test_cut_index_refuses_more_stages_than_the_backbone_has():
    """Check that asking for more stages than exist names the valid range."""
    backbone = _backbone("mobilenet_v2")
    assert cut_index(backbone, 1) == len(backbone.stages()) - 1
    with pytest.raises(ValueError, match=f"expected 1 to {len(backbone.stages())}"):
        cut_index(backbone, len(backbone.stages()) + 1)


# ---- the activation cache --------------------------------------------------------------------


def test_activation_cache_is_float16_reused_and_recomputed_for_another_k(tmp_path, monkeypatch):
    """Check that cached activations are float16 maps of the prefix's shape, read back on a second run,
    recomputed when K changes, and that through the tail they give the backbone's features."""
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "posters").mkdir()
    paths = {f"p{k}": tmp_path / "posters" / f"p{k}.jpg" for k in range(5)}
    for k, path in enumerate(paths.values()):
        write_poster(path, seed=k)
    dataset = types.SimpleNamespace(ids=list(paths), image_paths=paths)
    backbone = _backbone("efficientnet_lite0")
    preprocessing = backbone.preprocessing.with_policy("stretch", TINY)
    config = types.SimpleNamespace(backbone="efficientnet_lite0", weights=None, feature_batch_size=4)

    def cached(fine_tune: int):
        return finetune.cache_activations(dataset, config, preprocessing, cut_index(backbone, fine_tune), False)

    first, failed = cached(1)
    assert not failed
    assert first.values.dtype == np.float16 and first.values.shape == (5, np.prod(first.map_shape))
    assert first.map_shape == BackbonePrefix(backbone, cut_index(backbone, 1), TINY).map_shape
    assert (first.spec["n_computed"], first.spec["n_cached"]) == (5, 0)

    again, _ = cached(1)
    assert (again.spec["n_computed"], again.spec["n_cached"], again.spec["engine"]) == (0, 5, "cache")
    np.testing.assert_array_equal(np.asarray(again.values), np.asarray(first.values))

    other, _ = cached(2)
    assert (other.spec["n_computed"], other.spec["n_cached"]) == (5, 0)
    assert other.map_shape != first.map_shape and other.spec["cut"] != first.spec["cut"]

    x = torch.from_numpy(np.stack([load_input(p, preprocessing) for p in paths.values()]))
    with torch.no_grad():
        expected = backbone(x)
    for activations, fine_tune in ((first, 1), (other, 2)):
        features = finetune.pooled_features(_tail(backbone, fine_tune), activations, np.arange(5))
        # float16 storage rounds at about 1e-3 relative.
        np.testing.assert_allclose(features, expected.numpy(), rtol=2e-2, atol=2e-2 * float(expected.abs().mean()))


# ---- train --fine-tune 1, end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two fine-tuned runs (K=1) on sixty tiny posters over seven genres, multilabel then per-genre, with a
    cache of their own (the second run reads the first one's activations)."""
    from postergenre.cli import main

    root = tmp_path_factory.mktemp("finetune")
    dataset = write_dataset(root / "data", _colour_labels(N_POSTERS), GENRES)
    folders = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSTERGENRE_CACHE_DIR", str(root / "cache"))
        for mode in ("multilabel", "per-genre"):
            folders[mode] = root / mode
            argv = ["-q", "train", str(dataset), "--out", str(folders[mode]), "--fine-tune", "1", "--mode", mode]
            assert main([*argv, *FAST, "--no-text"]) == 0
    return folders


def _posters(run) -> list:
    """The run's posters (the dataset folder beside the run folders)."""
    return sorted((run.parent / "data" / "images").glob("*.jpg"))


@pytest.mark.parametrize("mode", ["multilabel", "per-genre"])
def test_fine_tuned_run_saves_the_tuned_backbone_whole(runs, mode):
    """Check that the run folder holds backbone.safetensors and backbone.onnx, model.json says K=1, and the
    saved backbone differs from the bundled weights in the tail's trained parameters only."""
    run = runs[mode]
    assert (run / "backbone.safetensors").is_file() and (run / "backbone.onnx").is_file()
    info = json.loads((run / "model.json").read_text())
    assert info["fine_tune"] == 1 and info["trained_backbone"] is True and info["mode"] == mode
    assert info["features"]["weights"] == "backbone.safetensors" and len(info["genres"]) == len(GENRES)
    # The joint phase beat the warm-started head, so the tuned tail is what was kept.
    assert info["best_epoch"] > EPOCHS

    bundled = create_backbone("efficientnet_lite0")
    reference = bundled.state_dict()
    saved = load_file(str(run / "backbone.safetensors"))
    assert set(saved) == set(reference)
    changed = {k for k in saved if not torch.equal(saved[k], reference[k])}
    trainable = {key for key, p in bundled.named_parameters() if p.requires_grad}
    assert changed == _stage_keys(bundled, cut_index(bundled, 1)) & trainable
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())


def test_second_run_reads_the_activations_from_the_cache(runs):
    """Check that the first run computed every poster's activations and the second read them all back."""
    first = json.loads((runs["multilabel"] / "model.json").read_text())["features"]["activations"]
    second = json.loads((runs["per-genre"] / "model.json").read_text())["features"]["activations"]
    assert (first["n_computed"], first["n_cached"]) == (N_POSTERS, 0)
    assert (second["n_computed"], second["n_cached"], second["engine"]) == (0, N_POSTERS, "cache")
    assert first["cut"] == second["cut"] == "head"


@pytest.mark.parametrize("mode", ["multilabel", "per-genre"])
def test_onnx_predictions_equal_the_pytorch_classifiers(runs, mode):
    """Check that Predictor (backbone.onnx, NumPy head) gives the probabilities of the PyTorch classifier that
    explain loads from the same run, within 1e-4."""
    run = runs[mode]
    posters = _posters(run)[:8]
    predictor = Predictor.load(run)
    frame = predictor.predict_images(posters)
    classifier = load_classifier(run)
    x = torch.from_numpy(np.stack([load_input(p, predictor.preprocessing) for p in posters]))
    with torch.no_grad():
        expected = torch.sigmoid(classifier(x)).double().numpy()
    probabilities = frame[GENRES].to_numpy()
    assert probabilities.shape == (len(posters), len(GENRES)) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["multilabel", "per-genre"])
def test_training_validation_probabilities_are_the_exported_models(runs, mode):
    """Check that the validation probabilities written at training (tail on float16 cached maps) are what
    the exported run predicts for those posters, up to float16 rounding."""
    run = runs[mode]
    validation = pd.read_csv(run / "validation_predictions.csv", index_col="Id")
    assert list(validation.columns) == GENRES and len(validation) > 0
    posters = [run.parent / "data" / "images" / f"{id_}.jpg" for id_ in validation.index]
    predicted = Predictor.load(run).predict_images(posters)
    # Measured: at most 8e-4 apart.
    np.testing.assert_allclose(predicted[GENRES].to_numpy(), validation.to_numpy(), atol=5e-3)


@pytest.mark.parametrize("mode", ["multilabel", "per-genre"])
def test_explain_uses_the_tuned_backbone(runs, mode):
    """Check that explain's classifier of a fine-tuned run carries backbone.safetensors, so that its logits
    differ from those with the bundled weights, and its Grad-CAM probability is the run's prediction."""
    run = runs[mode]
    poster = _posters(run)[0]
    classifier = load_classifier(run)
    saved = load_file(str(run / "backbone.safetensors"))
    state = classifier.backbone.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    bundled = classifier_from_parts(
        create_backbone("efficientnet_lite0", pooled_stages=0),
        classifier.head,
        classifier.genres,
        classifier.thresholds,
        classifier.preprocessing,
    )
    x = classifier.input_tensor(Image.open(poster).convert("RGB"))
    with torch.no_grad():
        tuned_logits, bundled_logits = classifier(x), bundled(x)
    assert tuned_logits.shape == (1, len(GENRES)) and torch.isfinite(tuned_logits).all()
    assert (tuned_logits - bundled_logits).abs().max() > 1e-3

    heatmap, probability = grad_cam(classifier, Image.open(poster).convert("RGB"), GENRES.index("Drama"))
    assert np.isfinite(heatmap).all()
    predicted = Predictor.load(run).predict_images([poster])
    assert probability == pytest.approx(float(predicted["Drama"].iloc[0]), abs=1e-4)
