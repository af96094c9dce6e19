"""Ensembles of backbones: the ensemble head, its saved form, training, prediction and refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_labels, write_dataset, write_poster
from training_doubles import cli_main, fake_extract_features, install_doubles, write_fake_onnx

from postergenre.inference.predictor import Predictor, SavedModel, head_logits
from postergenre.models.preprocessing import Preprocessing
from postergenre.training.config import TrainConfig
from postergenre.training.ensemble import column_spans, ensemble_history
from postergenre.training.heads import EnsembleHead, create_head, head_from_description
from postergenre.training.loop import TrainResult, predict_logits
from postergenre.training.run import save_model

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
ENSEMBLE = "efficientnet_lite0+mobilenet_v2"
FAST = ["--epochs", "4", "--patience", "3", "--min-positives", "3", "--no-text"]


def random_ensemble(widths=(12, 12), kinds=("mlp", "linear"), seed: int = 0) -> EnsembleHead:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    members = []
    for k, (width, kind) in enumerate(zip(widths, kinds, strict=True)):
        head = create_head(kind, width, len(GENRES), hidden=5)
        head.set_standardisation(rng.normal(0, 0.3, size=(40, width)))
        head.logit_offset.copy_(torch.linspace(-1, 1, len(GENRES)) * (k + 1))
        members.append(head)
    return EnsembleHead(members, column_spans(list(widths))).eval()


def test_ensemble_head_averages_its_members_on_their_columns():
    """Check that the ensemble's logits are the mean of each member's logits on its own columns."""
    head = random_ensemble(widths=(12, 7))
    x = np.random.default_rng(3).normal(0, 0.3, size=(9, 19)).astype(np.float32)
    expected = (predict_logits(head.members[0], x[:, :12]) + predict_logits(head.members[1], x[:, 12:])) / 2
    np.testing.assert_allclose(predict_logits(head, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.logit_offset.numpy(), np.linspace(-1, 1, len(GENRES)) * 1.5, atol=1e-6)


def test_saved_ensemble_runs_in_numpy_and_rebuilds_from_its_description():
    """Check that the torch-free predictor and a head rebuilt from model.json give the ensemble's logits."""
    head = random_ensemble(widths=(12, 7), kinds=("per_genre_mlp", "mlp"))
    x = np.random.default_rng(4).normal(0, 0.3, size=(6, 19)).astype(np.float32)
    tensors = {k: v.numpy() for k, v in head.state_dict().items()}
    description = json.loads(json.dumps(head.describe()))
    np.testing.assert_allclose(head_logits(description, tensors, x), predict_logits(head, x), rtol=1e-5, atol=1e-5)
    rebuilt = head_from_description(description)
    rebuilt.load_state_dict(head.state_dict())
    np.testing.assert_array_equal(predict_logits(rebuilt.eval(), x), predict_logits(head, x))


def test_ensemble_history_has_one_column_per_member_and_figure():
    """Check that members stopping at different epochs share one history, blank after each stopped."""
    rows = lambda n: [{"epoch": e, "loss": 1.0 / e, "val_macro_auc": 0.5 + e / 100} for e in range(1, n + 1)]  # noqa: E731
    results = {"a": TrainResult(None, rows(3), 2, True), "b": TrainResult(None, rows(5), 5, False)}
    frame = pd.DataFrame(ensemble_history(results))
    assert list(frame.columns) == ["epoch", "loss a", "val_macro_auc a", "loss b", "val_macro_auc b"]
    assert frame["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert frame["loss a"].isna().tolist() == [False, False, False, True, True]
    assert frame["val_macro_auc b"].iloc[-1] == pytest.approx(0.55)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backbone": "efficientnet_lite0+efficientnet_lite0"}, "name each backbone once"),
        ({"backbone": "efficientnet_lite0+custom_cnn"}, "custom_cnn trains on images"),
        ({"backbone": ENSEMBLE, "fine_tune": 1}, "--fine-tune applies to one backbone"),
        ({"backbone": ENSEMBLE, "weights": "w.pth"}, "--weights names one backbone"),
        ({"backbone": ENSEMBLE, "input_size": (320, 224)}, "--input-size would force one size"),
        ({"backbone": ENSEMBLE, "fusion": "concat"}, "use --fusion late or auto"),
    ],
)
def test_ensemble_settings_that_cannot_work_are_refused(settings, message):
    """Check that each ensemble setting that cannot apply is refused with the fix."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_a_member_may_name_its_input_size():
    """Check NAME@HxW: one backbone may join twice at two sizes, and a malformed size names the form."""
    from postergenre.training.config import member_preprocessing, split_member

    assert split_member("efficientnet_lite0@320x224") == ("efficientnet_lite0", (320, 224))
    assert split_member("mobilenet_v2") == ("mobilenet_v2", None)
    config = TrainConfig(backbone="efficientnet_lite0+efficientnet_lite0@256x160")
    sizes = {member: pre.input_size for member, pre in member_preprocessing(config).items()}
    assert sizes == {"efficientnet_lite0": (320, 224), "efficientnet_lite0@256x160": (256, 160)}
    with pytest.raises(ValueError, match=r"expected NAME@HEIGHTxWIDTH .* e\.g\. mobilenet_v2@320x224"):
        TrainConfig(backbone="efficientnet_lite0+mobilenet_v2@320")


def test_one_backbone_may_name_its_input_size():
    """Check NAME@HxW outside an ensemble reads as --input-size, and that the two may not disagree."""
    from postergenre.training.config import resolve_preprocessing

    config = TrainConfig(backbone="efficientnet_lite0@256x160")
    assert (config.backbone, config.input_size, config.is_ensemble) == ("efficientnet_lite0", (256, 160), False)
    assert resolve_preprocessing(config).input_size == (256, 160)
    assert TrainConfig(backbone="mobilenet_v2@256x160", input_size=(256, 160)).input_size == (256, 160)
    with pytest.raises(ValueError, match="names input 256x160 and --input-size names 320x224; give one"):
        TrainConfig(backbone="efficientnet_lite0@256x160", input_size=(320, 224))


def test_auto_fusion_of_an_ensemble_leaves_out_concat():
    """Check that an ensemble's text fusion candidates are the image alone and late fusion."""
    from postergenre.training.fusion import candidate_names

    assert candidate_names(TrainConfig(backbone=ENSEMBLE, fusion="auto")) == ["image", "late"]
    assert candidate_names(TrainConfig(fusion="auto")) == ["image", "concat", "late"]


def make_ensemble_run(folder, sizes=((32, 32), (48, 32))):
    """A run folder whose two fake backbones read posters at different sizes."""
    folder.mkdir(parents=True)
    head = random_ensemble()
    members = []
    for k, size in enumerate(sizes):
        preprocessing = Preprocessing(size, (0.5,) * 3, (0.5,) * 3, resize="stretch")
        onnx = "backbone.onnx" if k == 0 else f"backbone.{k}.onnx"
        write_fake_onnx(folder / onnx, size)
        columns = [12 * k, 12 * k + 12]
        member = {"backbone": f"fake{k}", "preprocessing": preprocessing.to_dict(), "columns": columns, "onnx": onnx}
        members.append(member)
    info = {
        "name": folder.name,
        "mode": "multilabel",
        "head": head.describe(),
        "backbone": "fake0+fake1",
        "preprocessing": members[0]["preprocessing"],
        "members": members,
        "flip": False,
        "genres": GENRES,
        "thresholds": [0.5] * len(GENRES),
        "train_prevalence": [0.2] * len(GENRES),
        "text": None,
        "postergenre_version": "0.1.0",
    }
    save_model(folder, head, info)
    return folder, [Preprocessing.from_dict(m["preprocessing"]) for m in members]


def test_predictor_reads_each_poster_at_each_backbones_input(tmp_path):
    """Check that an ensemble run scores files and decoded images as its backbones' features side by side."""
    from PIL import Image

    run, preprocessing = make_ensemble_run(tmp_path / "run")
    paths = {}
    for k in range(3):
        paths[f"p{k}"] = tmp_path / f"p{k}.jpg"
        write_poster(paths[f"p{k}"], seed=k, size=(30 + 8 * k, 50))
    joined = np.hstack([fake_extract_features(paths, "fake", preprocessing=pre).values for pre in preprocessing])
    expected = SavedModel.load(run).probabilities(joined)

    predictor = Predictor.load(run)
    scores = predictor.score_paths(list(paths.values()), batch_size=2)
    np.testing.assert_allclose(scores.probabilities, expected, rtol=1e-4, atol=1e-6)
    one = predictor.image_features(Image.open(paths["p1"]).convert("RGB"))
    np.testing.assert_allclose(one[0], joined[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="is an ensemble"):
        predictor.features(np.zeros((1, 3, 32, 32), np.float32))


def test_predictor_names_a_missing_member_file(tmp_path):
    """Check that a run missing one of its backbones' ONNX files is refused, naming the file."""
    run, _ = make_ensemble_run(tmp_path / "run")
    (run / "backbone.1.onnx").unlink()
    with pytest.raises(Exception, match=r"backbone\.1\.onnx: not found"):
        Predictor.load(run)


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data", random_labels(80, GENRES, seed=1), GENRES)


def _best_epoch(aucs: pd.Series) -> int:
    """The epoch early stopping keeps: the first to beat every earlier one by more than MIN_DELTA."""
    from postergenre.training.loop import MIN_DELTA

    best_auc, best = -np.inf, 0
    for epoch, auc in enumerate(aucs, start=1):
        if auc > best_auc + MIN_DELTA:
            best_auc, best = auc, epoch
    return best


def test_train_an_ensemble_writes_every_backbone_and_predicts_as_it_evaluated(monkeypatch, tmp_path, dataset, capsys):
    """Check that train --backbone A+B saves one head per backbone, each backbone's ONNX, a history
    per backbone, and that predict gives the test probabilities that evaluation scored."""
    install_doubles(monkeypatch, tmp_path)
    run = tmp_path / "run"
    assert cli_main(monkeypatch, ["-q", "train", str(dataset), "--out", str(run), "--backbone", ENSEMBLE, *FAST]) == 0

    info = json.loads((run / "model.json").read_text())
    assert info["backbone"] == ENSEMBLE
    assert info["head"]["type"] == "ensemble"
    assert [m["backbone"] for m in info["members"]] == ENSEMBLE.split("+")
    assert [m["columns"] for m in info["members"]] == [[0, 12], [12, 24]]
    assert info["head"]["columns"] == [[0, 12], [12, 24]]
    assert (run / "backbone.onnx").is_file() and (run / "backbone.1.onnx").is_file()
    history = pd.read_csv(run / "history.csv")
    for name in ENSEMBLE.split("+"):
        assert {f"loss {name}", f"val_macro_auc {name}", f"val_balanced_accuracy {name}"} <= set(history.columns)
    # Each backbone's head was trained again for the epochs its own early stopping chose.
    best = {name: _best_epoch(history[f"val_macro_auc {name}"].dropna()) for name in ENSEMBLE.split("+")}
    assert info["refit"]["epochs"] == {"image": best}
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["genre"] for row in metrics["per_genre"]] == info["genres"]

    split = pd.read_csv(run / "split.csv", index_col=0)
    test_ids = list(split.index[split["split"] == "test"])[:4]
    images = [str(dataset / "images" / f"{i}.jpg") for i in test_ids]
    capsys.readouterr()
    assert cli_main(monkeypatch, ["predict", str(run), *images, "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    features = fake_extract_features({i: p for i, p in zip(test_ids, images, strict=True)}, "fake").values
    expected = SavedModel.load(run).probabilities(np.hstack([features, features]))
    got = np.array([[row["probabilities"][g] for g in info["genres"]] for row in predicted])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


# ---- explaining an ensemble -------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_backbones(one_torch_thread):
    from postergenre.models.backbones import create_backbone

    return [create_backbone(name).eval() for name in ENSEMBLE.split("+")]


@pytest.fixture(scope="module")
def poster():
    from PIL import Image

    from postergenre.data.demo import demo_dataset_root

    return Image.open(sorted((demo_dataset_root() / "images").glob("*.jpg"))[5]).convert("RGB")


def ensemble_classifier(backbones, sizes=((64, 48), (96, 64)), silent: int | None = None):
    """An explainable ensemble at tiny inputs; member ``silent`` gets a head with no weights."""
    from postergenre.explain.classifier import EnsembleBackbone, classifier_from_parts

    preprocessing = [b.preprocessing.with_policy("stretch", size) for b, size in zip(backbones, sizes, strict=True)]
    head = random_ensemble(widths=[b.num_features for b in backbones], kinds=("linear", "linear"))
    if silent is not None:
        torch.nn.init.zeros_(head.members[silent].fc.weight)
    ensemble = EnsembleBackbone(backbones, preprocessing)
    return classifier_from_parts(ensemble, head, GENRES, [0.5] * len(GENRES), preprocessing[0])


def test_ensemble_classifier_scores_each_backbone_at_its_own_input(two_backbones, poster):
    """Check that the explained ensemble's probabilities are the ensemble head's on each backbone's features."""
    from postergenre.explain.gradcam import explain_image

    classifier = ensemble_classifier(two_backbones)
    members = zip(two_backbones, classifier.backbone.preprocessing, strict=True)
    with torch.no_grad():
        features = torch.cat([b(torch.from_numpy(p(poster))[None]) for b, p in members], 1)
        expected = torch.sigmoid(classifier.head(features))[0].numpy()
    explanation = explain_image(classifier, poster, top=2)
    np.testing.assert_allclose(explanation.probabilities, expected, rtol=1e-5, atol=1e-6)
    assert explanation.backbone == ENSEMBLE
    assert any("ensemble of 2 backbones" in note for note in explanation.notes)
    for cam in explanation.cams:
        assert cam.heatmap.shape == (poster.height, poster.width)
        assert cam.heatmap.max() == pytest.approx(1.0) and cam.heatmap.min() >= 0


def test_ensemble_map_is_the_one_backbone_map_when_the_other_adds_nothing(two_backbones, poster):
    """Check that with one backbone's head silenced, the ensemble's map is that of the other backbone alone."""
    from postergenre.explain.classifier import classifier_from_parts
    from postergenre.explain.gradcam import explain_image

    classifier = ensemble_classifier(two_backbones, silent=1)
    alone = classifier_from_parts(
        two_backbones[0], classifier.head.members[0], GENRES, [0.5] * len(GENRES), classifier.backbone.preprocessing[0]
    )
    # The most probable genre: random heads may leave a less probable one no positive evidence anywhere.
    alone_cam = explain_image(alone, poster, top=1).cams[0]
    ensemble_map = explain_image(classifier, poster, [alone_cam.index]).cams[0].heatmap
    alone_map = alone_cam.heatmap
    assert alone_map.max() > 0
    np.testing.assert_allclose(ensemble_map, alone_map, atol=1e-4)


def test_one_backbone_at_two_sizes_trains_and_predicts_at_each_size(monkeypatch, tmp_path, dataset, capsys):
    """Check that a member's own input size reaches its features, model.json, its ONNX file and predict."""
    install_doubles(monkeypatch, tmp_path)
    run = tmp_path / "run"
    backbone = "efficientnet_lite0+efficientnet_lite0@48x32"
    assert cli_main(monkeypatch, ["-q", "train", str(dataset), "--out", str(run), "--backbone", backbone, *FAST]) == 0

    info = json.loads((run / "model.json").read_text())
    assert [m["member"] for m in info["members"]] == backbone.split("+")
    assert [m["backbone"] for m in info["members"]] == ["efficientnet_lite0"] * 2
    assert [m["preprocessing"]["input_size"] for m in info["members"]] == [[32, 32], [48, 32]]
    image = sorted((dataset / "images").glob("*.jpg"))[0]
    capsys.readouterr()
    assert cli_main(monkeypatch, ["predict", str(run), str(image), "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]["probabilities"]
    sizes = [Preprocessing((h, w), (0.5,) * 3, (0.5,) * 3, resize="stretch") for h, w in ((32, 32), (48, 32))]
    joined = np.hstack([fake_extract_features({"p": image}, "fake", preprocessing=pre).values for pre in sizes])
    expected = SavedModel.load(run).probabilities(joined)[0]
    np.testing.assert_allclose([predicted[g] for g in info["genres"]], expected, rtol=1e-4, atol=1e-6)


def test_evaluate_an_ensemble_run_again_gives_its_figures(monkeypatch, tmp_path, dataset):
    """Check that evaluate, extracting each backbone's features afresh, reproduces the figures train wrote."""
    install_doubles(monkeypatch, tmp_path)
    run = tmp_path / "run"
    backbone = "efficientnet_lite0+mobilenet_v2@48x32"
    assert cli_main(monkeypatch, ["-q", "train", str(dataset), "--out", str(run), "--backbone", backbone, *FAST]) == 0
    trained = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "again"
    assert cli_main(monkeypatch, ["-q", "evaluate", str(run), "--out", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["per_genre"] == trained["per_genre"]
    assert again["n_samples"] == trained["n_samples"]
