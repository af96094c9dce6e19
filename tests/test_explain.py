"""Seeing inside the models: Grad-CAM, filters, feature maps, activation maximisation, their commands and report."""

from __future__ import annotations

import re
import sys
import types
from html import escape as html_escape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from postergenre.cli import main
from postergenre.data.demo import demo_dataset_root
from postergenre.errors import PosterGenreError
from postergenre.explain import activation_max, filters, gradcam, render
from postergenre.explain import classifier as classifiers
from postergenre.explain.classifier import classifier_from_parts, load_classifier
from postergenre.explain.gradcam import explain_image, grad_cam, text_read
from postergenre.explain.report import explained_examples_html, pick_examples
from postergenre.models.backbones import create_backbone, list_backbones
from postergenre.text.ocr import OcrSettings, TextLine
from postergenre.training.fusion import text_extra_installed as fusion_extra_installed

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]  # odd on purpose
POSTERS = sorted((demo_dataset_root() / "images").glob("*.jpg"))
TINY = (64, 48)  # (height, width): every backbone runs at this size in a blink


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest's one_torch_thread)."""


def _head(num_features: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(num_features, len(GENRES))
    nn.init.normal_(head.weight, std=num_features**-0.5)
    return head


def _classifier(backbone, *, size=TINY, resize="stretch", seed=0, flip=False):
    preprocessing = backbone.preprocessing.with_policy(resize, input_size=size)
    head = _head(backbone.num_features, seed)
    return classifier_from_parts(backbone, head, GENRES, np.linspace(0.2, 0.8, len(GENRES)), preprocessing, flip=flip)


@pytest.fixture(scope="module")
def lite0():
    """EfficientNet-Lite0 with its bundled ImageNet weights (features with real structure)."""
    return create_backbone("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def poster() -> Image.Image:
    """A real 2:3 poster thumbnail from the demo dataset (135x200)."""
    return Image.open(POSTERS[5]).convert("RGB")


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 0 when either is constant (it has no pattern to share)."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# ---- Grad-CAM --------------------------------------------------------------------------------


@pytest.mark.parametrize("resize", ["center_crop", "pad", "stretch"])
def test_heatmap_has_the_posters_size_and_unit_range(lite0, poster, resize):
    """Check the heatmap is (H, W) of the original poster, finite, in [0, 1] and peaks at 1, for each resize policy."""
    heatmap, probability = grad_cam(_classifier(lite0, size=(96, 96), resize=resize), poster, 2)
    assert heatmap.shape == (poster.height, poster.width)
    assert np.isfinite(heatmap).all()
    assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
    assert 0 < probability < 1


def test_center_crop_leaves_the_parts_cut_off_cold(lite0, poster):
    """Check that with center_crop the poster's top and bottom (never seen by the network) get no heat."""
    heatmaps = [c.heatmap for c in explain_image(_classifier(lite0, size=(96, 96), resize="center_crop"), poster).cams]
    cut = (
        round(poster.height * (1 - poster.width / poster.height * 0.875) / 2) - 2
    )  # rows above the crop, less a margin
    assert all(h[:cut].max() == 0 and h[-cut:].max() == 0 for h in heatmaps)
    assert all(h[cut + 4 : -cut - 4].max() > 0 for h in heatmaps)


def test_heatmaps_differ_between_genres(lite0, poster):
    """Check two genres of the same poster get different heatmaps."""
    classifier = _classifier(lite0, size=(128, 96))
    first, second = (grad_cam(classifier, poster, k)[0] for k in (0, 3))
    assert np.abs(first - second).mean() > 0.05
    assert _correlation(first, second) < 0.9


def test_randomised_head_changes_the_heatmap(lite0, poster):
    """Check the model-randomisation sanity test (Adebayo et al. 2018): a re-randomised head gives other maps."""
    correlations = []
    for genre in range(3):
        trained = grad_cam(_classifier(lite0, size=(128, 96), seed=0), poster, genre)[0]
        randomised = grad_cam(_classifier(lite0, size=(128, 96), seed=1), poster, genre)[0]
        assert trained.any() or randomised.any()
        correlations.append(_correlation(trained, randomised))
    assert np.mean(correlations) < 0.5, correlations


def test_grad_cam_equals_the_textbook_computation(lite0, poster):
    """Check the cut-graph Grad-CAM equals hooks + retain_grad + a full backward through every parameter."""
    classifier = _classifier(lite0, size=(96, 96))
    x = classifier.input_tensor(poster)
    stage = dict(lite0.stages())["head"]
    captured = []
    handle = stage.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        logits = classifier(x)
    finally:
        handle.remove()
    captured[0].retain_grad()
    logits[0, 4].backward()
    alpha = captured[0].grad.mean(dim=(2, 3), keepdim=True)
    expected = torch.relu((alpha * captured[0]).sum(dim=1))[0].detach()
    lite0.zero_grad(set_to_none=True)

    maps, ours_logits = gradcam._forward_keeping_maps(classifier, x)
    head_maps, _ = maps[0]  # the Grad-CAM stage comes first, then the pooled stages
    ours = gradcam._coarse_cam(head_maps, ours_logits[0, 4], flip=False)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in lite0.parameters())


def test_stage_maps_decompose_a_linear_heads_logit(lite0, poster):
    """Check the maps of the Grad-CAM stage and of every pooled stage, summed over positions, give a
    linear head's logit less its bias: no evidence the head reads is left out of the heatmap."""
    assert lite0.pooled_stages == 3
    classifier = _classifier(lite0, size=(96, 64))
    maps, logits = gradcam._forward_keeping_maps(classifier, classifier.input_tensor(poster))

    assert [stage_maps[0].shape[1] for stage_maps, _ in maps] == [1280, 320, 192, 112]
    total = sum(float(gradcam._signed_cam(m, logits[0, 2], flip=False).sum()) for m, _ in maps)
    assert total == pytest.approx(float((logits[0, 2] - classifier.head.bias[2]).detach()), rel=1e-4, abs=1e-5)


def test_a_head_reading_only_a_pooled_stage_still_gets_a_heatmap(lite0, poster):
    """Check a head whose weights read only the earliest pooled stage's columns gets a map (the map
    is not the last stage's alone), and a note says the stages are summed."""
    classifier = _classifier(lite0)
    with torch.no_grad():
        classifier.head.weight[:, : lite0.num_features - 112] = 0
    explanation = explain_image(classifier, poster, top=1)

    assert explanation.cams[0].heatmap.max() == pytest.approx(1.0)
    assert any("pool the 3 stages before the last" in note for note in explanation.notes)


def test_flip_model_maps_mirror_with_the_poster(lite0, poster):
    """Check that with flip the map of the mirrored poster is the mirrored map (both views are counted)."""
    classifier = _classifier(lite0, size=(96, 64), flip=True)
    heatmap = grad_cam(classifier, poster, 1)[0]
    mirrored = grad_cam(classifier, poster.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 1)[0]
    np.testing.assert_allclose(mirrored, heatmap[:, ::-1], atol=0.02)


def test_top_k_explains_the_most_probable_genres(lite0, poster):
    """Check --top K explains the K most probable genres, most probable first, with their thresholds."""
    classifier = _classifier(lite0)
    explanation = explain_image(classifier, poster, top=3)
    expected = list(np.argsort(-explanation.probabilities)[:3])
    assert [cam.index for cam in explanation.cams] == expected
    assert [cam.threshold for cam in explanation.cams] == [classifier.thresholds[k] for k in expected]
    assert explanation.caption == (
        "Grad-CAM at efficientnet_lite0 stages 'head + stage7, stage6, stage5' "
        "(last conv stage and pooled stages, summed)"
    )


def test_a_head_with_no_evidence_gives_zeros_not_nan(lite0, poster):
    """Check a head with zero weights (no gradient anywhere) gives an all-zero heatmap, not NaN."""
    classifier = _classifier(lite0)
    nn.init.zeros_(classifier.head.weight)
    heatmap, probability = grad_cam(classifier, poster, 0)
    assert heatmap.shape == (poster.height, poster.width) and not heatmap.any()
    assert probability == pytest.approx(torch.sigmoid(classifier.head.bias[0]).item(), abs=1e-6)
    assert not gradcam.normalise(np.full((3, 3), np.nan)).any()


def test_bad_genre_index_and_top_are_refused(lite0, poster):
    """Check an out-of-range genre index and --top 0 raise errors naming the valid range and genres."""
    classifier = _classifier(lite0)
    with pytest.raises(PosterGenreError, match=r"genre index 7 is out of range; .* 7 genres \(0-6\): Action, Comedy"):
        grad_cam(classifier, poster, 7)
    with pytest.raises(PosterGenreError, match="--top must be at least 1, got 0"):
        explain_image(classifier, poster, top=0)


def test_head_that_does_not_match_the_genres_is_refused(lite0, poster):
    """Check a head whose width differs from the genre count fails with both numbers."""
    classifier = classifier_from_parts(lite0, nn.Linear(lite0.num_features, 5), GENRES)
    with pytest.raises(PosterGenreError, match=r"logits of shape \(1, 5\), expected \(batch, 7\)"):
        grad_cam(classifier, poster, 0)
    with pytest.raises(PosterGenreError, match="got 2 thresholds for 7 genres"):
        classifier_from_parts(lite0, nn.Linear(lite0.num_features, 7), GENRES, [0.5, 0.5])


# ---- models that read poster text ------------------------------------------------------------

N_TEXT = 9  # a narrow stand-in for the sentence embedding + no-text flag (385 wide in real runs)


def _text_classifier(backbone, fusion: str, *, late_weight: float = 0.3):
    preprocessing = backbone.preprocessing.with_policy("stretch", input_size=TINY)
    text = {"fusion": fusion, "late_weight": late_weight, "num_features": N_TEXT, "min_confidence": 0.5}
    if fusion == "concat":
        head, text_head = _head(backbone.num_features + N_TEXT), None
    else:
        head, text_head = _head(backbone.num_features), _head(N_TEXT, seed=1)
    return classifier_from_parts(backbone, head, GENRES, None, preprocessing, text=text, text_head=text_head)


def _fused_logits(classifier, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The fusion written out: one head over both feature sets, or a weighted sum of two heads' logits."""
    if classifier.text["fusion"] == "concat":
        return classifier.head(torch.cat([features, text], dim=1))
    weight = classifier.text["late_weight"]
    return weight * classifier.head(features) + (1 - weight) * classifier.text_head(text)


@pytest.mark.parametrize("fusion", ["concat", "late"])
def test_text_model_logits_fuse_the_posters_text_as_training_does(lite0, poster, fusion):
    """Check a text model's logits are its fusion of image and fixed text features, and Grad-CAM runs on them."""
    classifier = _text_classifier(lite0, fusion)
    x = classifier.input_tensor(poster)
    text = torch.randn(1, N_TEXT, generator=torch.Generator().manual_seed(3))
    classifier.poster_text = text
    with torch.no_grad():
        features = classifier.features(x)
        expected = _fused_logits(classifier, features, text)
        torch.testing.assert_close(classifier(x), expected)

    explanation = explain_image(classifier, poster, [0, 3])
    assert all(cam.heatmap.shape == (poster.height, poster.width) for cam in explanation.cams)
    np.testing.assert_allclose(explanation.probabilities, torch.sigmoid(expected[0]).numpy(), atol=1e-5)

    classifier.poster_text = None  # no poster read: the no-text features (zero embedding, flag at 1)
    no_text = torch.zeros(1, N_TEXT)
    no_text[0, -1] = 1
    with torch.no_grad():
        torch.testing.assert_close(classifier(x), _fused_logits(classifier, features, no_text))


def test_late_fusion_without_its_text_head_is_refused(lite0):
    """Check a late-fusion model with no text head fails, naming the missing file."""
    text = {"fusion": "late", "late_weight": 0.5, "num_features": N_TEXT, "min_confidence": 0.5}
    with pytest.raises(PosterGenreError, match=r"text_head\.safetensors"):
        classifier_from_parts(lite0, _head(lite0.num_features), GENRES, text=text)


@pytest.mark.skipif(not fusion_extra_installed(), reason="needs the text extra")
def test_reading_a_poster_sets_its_text_features(lite0, tmp_path):
    """Check read_poster_text OCRs the poster (its word read, the no-text flag off); an image model reads nothing."""
    from test_text import write_text_poster

    from postergenre.text.embed import NUM_TEXT_FEATURES
    from postergenre.text.ocr import OcrSettings
    from postergenre.training.fusion import MIN_CONFIDENCE

    write_text_poster(tmp_path / "word.jpg", "NIGHTMARE")
    text = {
        "fusion": "concat",
        "late_weight": None,
        "num_features": NUM_TEXT_FEATURES,
        "min_confidence": MIN_CONFIDENCE,
        "ocr": OcrSettings().to_dict(),
    }
    head = _head(lite0.num_features + NUM_TEXT_FEATURES)
    classifier = classifier_from_parts(lite0, head, GENRES, text=text)

    lines = classifier.read_poster_text(tmp_path / "word.jpg")
    assert any("NIGHTMARE" in line.text.upper() for line in lines), [line.text for line in lines]
    assert classifier.poster_text.shape == (1, NUM_TEXT_FEATURES)
    assert classifier.poster_text[0, -1] == 0 and classifier.poster_text[0, :-1].norm() > 0.5
    assert _classifier(lite0).read_poster_text(tmp_path / "word.jpg") == []


# ---- every backbone --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list_backbones())
def random_backbone(request):
    """Each registered backbone with random weights (fast to build; resnet50v2 and vgg16 ship none)."""
    return create_backbone(request.param, pretrained=False).eval()


def test_every_backbone_gives_a_heatmap(random_backbone, poster):
    """Check Grad-CAM runs through each backbone's Grad-CAM stage: poster-sized, finite, in [0, 1]."""
    explanation = explain_image(_classifier(random_backbone), poster, top=2)
    assert len(explanation.cams) == 2 and explanation.probabilities.shape == (len(GENRES),)
    for cam in explanation.cams:
        assert cam.heatmap.shape == (poster.height, poster.width)
        assert np.isfinite(cam.heatmap).all() and cam.heatmap.min() >= 0 and cam.heatmap.max() <= 1


def test_every_backbone_shows_filters_and_maps(random_backbone):
    """Check each backbone's first-layer filter grid has one tile per filter and every listed layer resolves."""
    first_conv = filters.first_convolution(random_backbone.stages()[0][1])[1]
    grid = filters.filter_grid(random_backbone)
    assert grid.n_tiles == min(first_conv.out_channels, filters.MAX_FILTERS)
    names = filters.layer_names(random_backbone)
    assert random_backbone.gradcam_layer in names
    assert all(isinstance(filters.resolve_layer(random_backbone, name), nn.Module) for name in names)

    x = torch.randn(1, 3, *TINY, generator=torch.Generator().manual_seed(0))
    maps = filters.feature_maps(random_backbone, random_backbone.gradcam_layer, x)
    assert maps.ndim == 3 and np.isfinite(maps).all()
    assert filters.feature_map_grid(maps).n_tiles == min(16, len(maps))


# ---- filters and feature maps ----------------------------------------------------------------


def _count_tiles(image: Image.Image, tile: int, columns: int) -> int:
    """Non-blank cells of an unlabelled grid, read off the picture itself."""
    pixels, step, count = np.asarray(image), tile + render.GAP, 0
    for top in range(render.GAP, image.height - tile + 1, step):
        for left in range(render.GAP, render.GAP + columns * step - tile + 1, step):
            count += bool((pixels[top : top + tile, left : left + tile] != 255).any())
    return count


def test_filter_grid_draws_one_tile_per_filter():
    """Check MobileNetV2's 32 first-layer filters make 32 tiles, counted by splitting the picture."""
    backbone = create_backbone("mobilenet_v2").eval()
    grid = filters.filter_grid(backbone, tile=20)
    assert grid.n_tiles == 32 and grid.source == "stem.0"
    assert grid.image.size == (6 * (20 + render.GAP) + render.GAP,) * 2  # 6x6 cells for 32 tiles
    assert _count_tiles(grid.image, 20, columns=6) == 32


def test_filter_tile_scales_each_filter_to_the_full_range():
    """Check a filter is min-max scaled on its own: its smallest weight is black, its largest white."""
    weights = np.array([[[0.0, 1.0]], [[2.0, 3.0]], [[0.5, 0.5]]])  # (3, 1, 2)
    tile = np.asarray(render.filter_tile(weights[:, :, :1].repeat(2, axis=1), 2))
    assert tile.shape == (2, 2, 3) and tile.min() == 0 and tile.max() == 255


def test_feature_map_grid_shows_the_strongest_channels_first():
    """Check the map grid picks the 16 channels with the highest mean activation, strongest first."""
    maps = np.random.default_rng(0).random((40, 5, 5)).astype(np.float32) * 0.5 + np.arange(40)[:, None, None]
    grid = filters.feature_map_grid(maps)
    assert filters.strongest_channels(maps) == list(range(39, 23, -1))
    assert grid.n_tiles == 16 and grid.labels[0].startswith("#39: mean")


def test_unknown_layer_lists_the_valid_ones(random_backbone):
    """Check an unknown layer name raises an error listing the usable names."""
    first = filters.layer_names(random_backbone)[0]
    with pytest.raises(PosterGenreError, match=rf"unknown layer 'nope' for backbone .*expected one of {first}, "):
        filters.resolve_layer(random_backbone, "nope")
    with pytest.raises(PosterGenreError, match="unknown layer"):
        filters.resolve_layer(random_backbone, f"{first}.99.x")


def test_finer_layer_names_reach_modules_inside_stages():
    """Check names below a stage (stage7.0, head.0) resolve to the modules inside it."""
    backbone = create_backbone("efficientnet_lite0", pretrained=False)
    names = filters.layer_names(backbone)
    assert {"stem", "stage7", "stage7.0", "head", "head.0"} <= set(names)
    assert filters.resolve_layer(backbone, "stage7.0") is dict(backbone.stages())["stage7"][0]
    assert filters.resolve_layer(backbone, "stage7.0.block") is backbone._blocks[-1]


def test_a_vector_layer_has_no_maps():
    """Check asking for maps of custom_cnn's dense layer says it gives a vector and suggests a conv layer."""
    backbone = create_backbone("custom_cnn", pretrained=False).eval()
    with pytest.raises(PosterGenreError, match=r"'dense' gives a vector of 128 values, not maps; .*'block3'"):
        filters.feature_maps(backbone, "dense", torch.zeros(1, 3, *TINY))


# ---- activation maximisation -----------------------------------------------------------------

FEW_STEPS = activation_max.AscentSettings(steps=12, blur_every=4)


@pytest.mark.parametrize(("name", "layer", "channel"), [("mobilenet_v2", "stage3", 5), ("custom_cnn", "block2", 7)])
def test_activation_maximisation_raises_the_channel(name, layer, channel):
    """Check gradient ascent from noise raises a channel's mean activation well above its start."""
    backbone = create_backbone(name, pretrained=name == "mobilenet_v2").eval()
    flags = [p.requires_grad for p in backbone.parameters()]
    preprocessing = backbone.preprocessing.with_policy("stretch", input_size=TINY)
    objective = activation_max.channel_objective(backbone, layer, channel)
    result = activation_max.maximise(backbone, objective, preprocessing, target="t", settings=FEW_STEPS)
    assert result.end > result.start + 0.1 * abs(result.start) + 1e-3
    assert result.image.size == (TINY[1], TINY[0])
    assert [p.requires_grad for p in backbone.parameters()] == flags  # restored after the ascent
    assert all(p.grad is None for p in backbone.parameters())  # only the input was optimised


def test_activation_maximisation_raises_a_genre_logit(lite0):
    """Check gradient ascent raises a genre's logit through the whole classifier."""
    classifier = _classifier(lite0)
    objective = activation_max.genre_objective(classifier, 2)
    result = activation_max.maximise(
        classifier, objective, classifier.preprocessing, target="genre", settings=FEW_STEPS
    )
    assert result.end > result.start + 0.5


def test_channel_out_of_range_names_the_range():
    """Check a channel beyond the layer's width fails with the layer's channel count."""
    backbone = create_backbone("custom_cnn", pretrained=False).eval()
    objective = activation_max.channel_objective(backbone, "block1", 16)
    with pytest.raises(PosterGenreError, match=r"channel 16 is out of range; layer 'block1' has 16 channels \(0-15\)"):
        activation_max.maximise(backbone, objective, backbone.preprocessing, target="t", settings=FEW_STEPS)


# ---- poster text on the panels ----------------------------------------------------------------


def _text_line(text: str, left: float, top: float, right: float, bottom: float, confidence=0.9) -> TextLine:
    return TextLine(text, confidence, ((left, top), (right, top), (right, bottom), (left, bottom)))


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return (np.asarray(before, np.int16) != np.asarray(after, np.int16)).any(axis=-1)


def test_text_boxes_change_the_picture_only_on_and_near_the_boxes():
    """Check boxes given in poster pixels are outlined on a half-size picture, and nothing far from them changes."""
    picture = Image.new("RGB", (200, 300), (90, 120, 90))
    lines = [_text_line("NIGHTMARE", 100, 100, 300, 160), _text_line("ELM", 60, 400, 140, 460)]

    drawn = render.draw_text_boxes(picture, lines, poster_size=(400, 600))

    changed = _changed(picture, drawn)
    assert picture.getpixel((100, 50)) == (90, 120, 90)  # the input is left alone
    assert drawn.getpixel((100, 50)) == render.BOX_COLOUR  # the top edge of the first box, at half size
    assert drawn.getpixel((150, 65)) == render.BOX_COLOUR and drawn.getpixel((70, 215)) == render.BOX_COLOUR
    assert not changed[65, 100] and not changed[215, 50]  # inside the boxes: outlines only
    near = np.zeros_like(changed)
    near[50 - 16 : 80 + 3, 50 - 3 : 150 + 3] = True  # the first box, its halo and its number tag above it
    near[200 - 16 : 230 + 3, 30 - 3 : 70 + 3] = True
    assert changed.any() and not (changed & ~near).any()
    assert drawn.getpixel((190, 290)) == (90, 120, 90)
    assert not _changed(picture, render.draw_text_boxes(picture, [])).any()


def test_text_caption_numbers_the_lines_or_says_none():
    """Check the caption lists each line with its number and confidence, and says when there is no text."""
    lines = [_text_line("NIGHTMARE", 0, 0, 9, 9, 0.98), _text_line("ELM STREET", 0, 20, 9, 29, 0.8)]
    assert render.text_caption(lines) == 'text read (OCR): 1 "NIGHTMARE" (0.98)  2 "ELM STREET" (0.80)'
    assert render.text_caption([]) == render.NO_TEXT and "confidence floor" in render.NO_TEXT


def test_cam_panel_outlines_text_and_image_only_panels_are_unchanged(lite0, poster):
    """Check a panel with text lines differs from the plain one only near the boxes; None draws the plain panel."""
    cam = explain_image(_classifier(lite0), poster, [0]).cams[0]
    plain = render.cam_panel(poster, cam, height=400)
    # The poster is 135x200: at 400 px high every poster pixel is two panel pixels.
    boxed = render.cam_panel(poster, cam, height=400, text_lines=[_text_line("WORD", 20, 50, 110, 80)])

    assert boxed.size == plain.size
    changed = _changed(plain, boxed)
    rows, columns = np.nonzero(changed)
    assert rows.min() >= 100 - 16 and rows.max() <= 160 + 3 and columns.min() >= 40 - 3 and columns.max() <= 220 + 3
    assert boxed.getpixel((130, 100)) == render.BOX_COLOUR
    no_text = render.cam_panel(poster, cam, height=400, text_lines=None)
    assert not _changed(plain, no_text).any()


def test_text_read_keeps_the_lines_the_model_reads_in_reading_order(lite0):
    """Check text_read drops blank and unconfident lines as the text features do, orders the rest; None for images."""
    lines = [
        _text_line("STREET", 0, 40, 90, 60),
        _text_line("xq", 0, 80, 20, 90, confidence=0.3),  # under the model's 0.5 floor
        _text_line("ELM", 100, 0, 150, 20),
        _text_line("  ", 0, 100, 20, 110),
        _text_line("NIGHTMARE ON", 0, 2, 90, 22, confidence=0.5),
    ]
    read = text_read(_text_classifier(lite0, "concat"), lines)
    assert [line.text for line in read] == ["NIGHTMARE ON", "ELM", "STREET"]
    assert text_read(_classifier(lite0), lines) is None


@pytest.mark.parametrize("fusion", ["concat", "late"])
def test_text_model_explanation_notes_that_the_text_is_held_fixed(lite0, poster, fusion):
    """Check a text model's explanation says its text is held fixed and the probabilities include it."""
    notes = explain_image(_text_classifier(lite0, fusion), poster, [0]).notes
    assert any(f"text ({fusion} fusion), held fixed here" in note for note in notes), notes
    assert not any("text" in note for note in explain_image(_classifier(lite0), poster, [0]).notes)


# ---- loading a run ---------------------------------------------------------------------------


def test_load_classifier_needs_the_training_package(monkeypatch, tmp_path):
    """Check load_classifier says it needs the training package when postergenre.training.run is absent."""
    monkeypatch.setitem(sys.modules, "postergenre.training.run", None)
    with pytest.raises(NotImplementedError, match="needs the training package"):
        load_classifier(tmp_path)


def test_load_classifier_builds_the_run_from_load_head(monkeypatch, tmp_path):
    """Check a run is rebuilt from load_head's head and model info, with RUN/backbone.safetensors loaded."""
    from safetensors.torch import save_file

    trained = create_backbone("custom_cnn", pretrained=False)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "backbone.safetensors"))
    preprocessing = trained.preprocessing.with_policy("pad", input_size=(90, 60)).to_dict()
    info = {"backbone": "custom_cnn", "genres": GENRES, "thresholds": [0.3] * 7, "preprocessing": preprocessing}
    info |= {"flip": True, "name": "my-run", "weights": None}
    fake = types.ModuleType("postergenre.training.run")
    fake.load_head = lambda run_dir: (_head(128), info)
    monkeypatch.setitem(sys.modules, "postergenre.training.run", fake)

    classifier = load_classifier(tmp_path)
    assert classifier.genres == GENRES and classifier.flip and classifier.name == "my-run"
    assert classifier.preprocessing.input_size == (90, 60) and classifier.preprocessing.resize == "pad"
    np.testing.assert_allclose(classifier.thresholds, 0.3)
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(classifier.backbone.state_dict()[name], tensor)


def test_load_classifier_reads_weights_named_by_the_run(monkeypatch, tmp_path):
    """Check model.json's weights load when they name a file, and a digest falls back to the bundled weights."""
    from safetensors.torch import save_file

    saved = create_backbone("custom_cnn", pretrained=False)
    save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, str(tmp_path / "mine.safetensors"))
    infos = {
        "file": {"backbone": "custom_cnn", "weights": str(tmp_path / "mine.safetensors")},
        "digest": {"backbone": "mobilenet_v2", "weights": "9d8e" * 16},
    }
    fake = types.ModuleType("postergenre.training.run")
    fake.load_head = lambda run_dir: (_head(128), {"genres": GENRES, **infos[run_dir.name]})
    monkeypatch.setitem(sys.modules, "postergenre.training.run", fake)

    from_file = load_classifier(tmp_path / "file").backbone
    assert from_file.weights_source == str(tmp_path / "mine.safetensors")
    torch.testing.assert_close(from_file.state_dict()["block1.0.weight"], saved.state_dict()["block1.0.weight"])
    assert load_classifier(tmp_path / "digest").backbone.pretrained


# ---- the commands ----------------------------------------------------------------------------


@pytest.fixture
def fake_run(tmp_path, monkeypatch, lite0):
    """A run folder whose loading is replaced by a lite0 classifier with a random head."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(classifiers, "load_classifier", lambda run_dir: _classifier(lite0, size=(96, 64)))
    monkeypatch.chdir(tmp_path)
    return run


def test_explain_writes_one_panel_per_genre(fake_run, poster, capsys):
    """Check `explain RUN IMAGE --top 3` writes ./<stem>_explain.png with three panels and prints the layer."""
    poster.save(fake_run.parent / "poster.jpg")
    assert main(["-q", "explain", str(fake_run), "poster.jpg", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "Grad-CAM at efficientnet_lite0 stages 'head + stage7, stage6, stage5' (last conv stage and pooled" in out
    assert out.count("probability") == 3 and "wrote" in out
    figure = Image.open(fake_run.parent / "poster_explain.png")
    assert figure.width > 3 * render.fit_height(poster, render.PANEL_HEIGHT).width


def test_explain_named_genres(fake_run, poster, capsys):
    """Check --genre picks genres by name, case-insensitively, and --out names the file."""
    poster.save(fake_run.parent / "poster.jpg")
    assert (
        main(["-q", "explain", str(fake_run), "poster.jpg", "--genre", "horror", "--genre", "Drama", "--out", "x.png"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["Horror", "Drama"]
    assert (fake_run.parent / "x.png").is_file()


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_explain_unknown_genre_lists_the_genres(fake_run, poster, capsys):
    """Check an unknown genre is a one-line error listing the model's genres."""
    poster.save(fake_run.parent / "poster.jpg")
    assert main(["-q", "explain", str(fake_run), "poster.jpg", "--genre", "Musical"]) == 2
    assert _error(capsys) == f"error: unknown genre 'Musical'; this model's genres are {', '.join(GENRES)}"


def test_explain_unreadable_image_names_the_file(fake_run, capsys):
    """Check an unreadable or missing image is a one-line error naming the file."""
    (fake_run.parent / "broken.jpg").write_bytes(b"not a picture")
    assert main(["-q", "explain", str(fake_run), "broken.jpg"]) == 2
    assert _error(capsys).startswith("error: broken.jpg: ")
    assert main(["-q", "explain", str(fake_run), "missing.jpg"]) == 2
    assert _error(capsys) == "error: missing.jpg: file not found"


def test_explain_missing_run_and_loader(tmp_path, poster, monkeypatch, capsys):
    """Check a missing run folder, and a tree without the training package, are one-line errors."""
    monkeypatch.chdir(tmp_path)
    poster.save("poster.jpg")
    assert main(["-q", "explain", "nowhere", "poster.jpg"]) == 2
    assert "nowhere: run folder not found" in _error(capsys)
    monkeypatch.setitem(sys.modules, "postergenre.training.run", None)
    Path("run").mkdir()
    assert main(["-q", "explain", "run", "poster.jpg"]) == 2
    assert "needs the training package" in _error(capsys)


FEAR = _text_line("FEAR", 15, 40, 100, 75, confidence=0.95)
FAINT = _text_line("xq", 20, 150, 60, 170, confidence=0.3)  # under the floor: the model does not read it


@pytest.fixture
def text_run(tmp_path, monkeypatch, lite0, poster):
    """A run folder whose model reads poster text (late fusion), its OCR replaced by given lines; and word.jpg.

    Yields the reader: set ``reader.lines`` to what the OCR finds; ``reader.calls`` counts the readings.
    """
    reader = SimpleNamespace(lines=[FEAR, FAINT], calls=0)

    def read_poster_text(path):
        reader.calls += 1
        return list(reader.lines)

    def load(run_dir):
        classifier = _text_classifier(lite0, "late")
        classifier.read_poster_text = read_poster_text
        return classifier

    monkeypatch.setattr(classifiers, "load_classifier", load)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text-run").mkdir()
    poster.save("word.jpg")
    return reader


def _box_pixels(path) -> int:
    return int((np.asarray(Image.open(path).convert("RGB")) == render.BOX_COLOUR).all(axis=-1).sum())


def test_explain_text_model_outlines_the_text_it_reads(text_run, capsys):
    """Check explain outlines and lists the lines the model reads; --no-text-boxes still reads them but draws none."""
    assert main(["-q", "explain", "text-run", "word.jpg", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "text read (OCR), as outlined on the poster:\n   1  FEAR  (confidence 0.95)\nwrote" in out, out
    assert "xq" not in out
    assert _box_pixels("word_explain.png") > 100
    assert text_run.calls == 1

    assert main(["-q", "explain", "text-run", "word.jpg", "--top", "2", "--no-text-boxes", "--out", "off.png"]) == 0
    assert "text read" not in capsys.readouterr().out
    assert _box_pixels("off.png") == 0
    assert text_run.calls == 2  # the model's text input is read all the same


def test_explain_text_model_says_when_there_is_no_text(text_run, capsys):
    """Check a poster with no text the model reads (none, or only unconfident lines) is said so, with no box."""
    text_run.lines = [FAINT]
    assert main(["-q", "explain", "text-run", "word.jpg", "--top", "1"]) == 0
    assert render.NO_TEXT in capsys.readouterr().out
    assert _box_pixels("word_explain.png") == 0


def test_explain_text_model_without_the_extra_names_the_install(tmp_path, poster, lite0, monkeypatch, capsys):
    """Check a text model without the OCR package is a one-line error with the pip command, boxes or not."""
    from postergenre.text import ocr

    def missing():
        raise ImportError("no rapidocr")

    monkeypatch.setattr(ocr, "package_version", missing)
    monkeypatch.setattr(classifiers, "load_classifier", lambda run_dir: _text_classifier(lite0, "concat"))
    monkeypatch.chdir(tmp_path)
    poster.save("word.jpg")
    for flags in ([], ["--no-text-boxes"]):
        assert main(["-q", "explain", str(tmp_path), "word.jpg", *flags]) == 2
        assert "pip install 'postergenre[text]'" in _error(capsys)


def test_explain_image_model_ignores_text_boxes(fake_run, poster, monkeypatch, capsys):
    """Check an image-only run reads no text: no OCR, no text lines, the same picture with or without the flag."""
    from postergenre.text import ocr

    monkeypatch.setattr(ocr, "ocr_posters", lambda *a, **k: pytest.fail("an image-only run read poster text"))
    poster.save(fake_run.parent / "poster.jpg")
    assert main(["-q", "explain", str(fake_run), "poster.jpg", "--top", "1"]) == 0
    assert main(["-q", "explain", str(fake_run), "poster.jpg", "--top", "1", "--no-text-boxes", "--out", "b.png"]) == 0
    out = capsys.readouterr().out
    assert "text read" not in out and render.NO_TEXT not in out
    assert Image.open("poster_explain.png").tobytes() == Image.open("b.png").tobytes()


@pytest.mark.skipif(not fusion_extra_installed(), reason="needs the text extra")
def test_explain_a_real_text_model_outlines_the_word_ocr_reads(tmp_path, lite0, monkeypatch, capsys):
    """Check the whole path, real OCR and text embedding included: the poster's word is listed and outlined."""
    from test_text import write_text_poster

    from postergenre.text.embed import NUM_TEXT_FEATURES
    from postergenre.training.fusion import MIN_CONFIDENCE

    text = {"fusion": "concat", "num_features": NUM_TEXT_FEATURES, "min_confidence": MIN_CONFIDENCE}
    text["ocr"] = OcrSettings().to_dict()
    head = _head(lite0.num_features + NUM_TEXT_FEATURES)
    preprocessing = lite0.preprocessing.with_policy("stretch", input_size=TINY)
    classifier = classifier_from_parts(lite0, head, GENRES, None, preprocessing, text=text)
    monkeypatch.setattr(classifiers, "load_classifier", lambda run_dir: classifier)
    monkeypatch.chdir(tmp_path)
    write_text_poster(tmp_path / "word.jpg", "NIGHTMARE")

    assert main(["-q", "explain", str(tmp_path), "word.jpg", "--top", "1"]) == 0
    assert re.search(r"\n   1  NIGHTMARE  \(confidence 0\.\d\d\)\n", capsys.readouterr().out)
    assert _box_pixels("word_explain.png") > 100


def test_filters_list_layers(capsys):
    """Check --list-layers prints every stage and the modules inside, marking the Grad-CAM stage."""
    assert main(["-q", "filters", "custom_cnn", "--list-layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names[:2] == ["block1", "block1.0"] and "dense" in names
    assert any(line.startswith("block3 ") and "Grad-CAM" in line for line in lines)


def test_filters_first_layer_grid(tmp_path, monkeypatch, capsys):
    """Check `filters BACKBONE` writes the first layer's filters and says how many."""
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "filters", "mobilenet_v2"]) == 0
    assert "32 filters of stem.0 (mobilenet_v2)" in capsys.readouterr().out
    assert (tmp_path / "mobilenet_v2_first_filters.png").is_file()


def test_filters_feature_maps_of_a_poster(tmp_path, monkeypatch, poster, capsys):
    """Check --image writes the 16 strongest maps of --layer and prints their channels."""
    monkeypatch.chdir(tmp_path)
    poster.save("poster.jpg")
    assert main(["-q", "filters", "custom_cnn", "--image", "poster.jpg", "--layer", "block2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("block2: 32 channels of 75x75") and out.count("#") == 16
    assert (tmp_path / "poster_block2_maps.png").is_file()


def test_filters_channel_maximisation(tmp_path, monkeypatch, capsys):
    """Check --channel prints the start and end activation and writes the synthesised input."""
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "filters", "custom_cnn", "--layer", "block1", "--channel", "3", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("channel 3 of block1: activation ") and "after 3 steps" in out
    assert Image.open(tmp_path / "custom_cnn_channel_3_of_block1_maximised.png").size == (300, 300)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resnet18"], r"error: resnet18: neither a run folder nor a backbone name; .* efficientnet_lite0, .*vgg16"),
        (["custom_cnn", "--image", "p.jpg", "--layer", "nope"], r"error: unknown layer 'nope' .* block1, block1.0, "),
        (["custom_cnn", "--channel", "1", "--layer", "nope"], r"error: unknown layer 'nope'"),
        (["custom_cnn", "--genre", "Drama"], r"error: --genre needs a run folder: backbone custom_cnn alone has no"),
        (["vgg16"], r"error: backbone 'vgg16' ships no pretrained weights; pass weights=PATH or URL \(--weights"),
        (["custom_cnn", "--out", "grid.txt"], r"error: grid.txt: unknown picture type; .*\.png"),
        (["custom_cnn", "--channel", "1", "--steps", "0"], r"error: --steps must be at least 1, got 0"),
    ],
)
def test_filters_bad_input_lists_the_choices(tmp_path, monkeypatch, poster, capsys, argv, message):
    """Check each bad filters argument is a one-line error that says what is valid."""
    monkeypatch.chdir(tmp_path)
    poster.save("p.jpg")
    assert main(["-q", "filters", *argv]) == 2
    assert re.match(message, _error(capsys))


def test_filters_genre_of_a_run(fake_run, capsys):
    """Check --genre on a run raises that genre's logit, and an unknown genre lists the run's genres."""
    assert main(["-q", "filters", str(fake_run), "--genre", "Western", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    start, end = (float(v) for v in re.findall(r"activation (\S+) at the start, (\S+) after", out)[0])
    assert end > start
    assert main(["-q", "filters", str(fake_run), "--genre", "Musical"]) == 2
    assert "unknown genre 'Musical'; this model's genres are Action, Comedy" in _error(capsys)


# ---- the report section ----------------------------------------------------------------------


def test_pick_examples_takes_confident_right_then_wrong():
    """Check right answers are true positives by highest score; wrong ones false positives, then misses."""
    truth = np.array([1, 1, 0, 0, 1, 0, 1])
    score = np.array([0.9, 0.6, 0.95, 0.2, 0.1, 0.7, 0.3])
    examples = pick_examples(truth, score, threshold=0.5, per_kind=3)
    assert [(e.row, e.kind) for e in examples] == [
        (0, "right"),
        (1, "right"),
        (2, "false positive"),
        (5, "false positive"),
        (4, "missed"),
    ]


def test_explained_examples_html_embeds_heatmaps(lite0):
    """Check the report section names the chosen genres and embeds one JPEG heatmap per example."""
    classifier = _classifier(lite0, size=(64, 64))
    paths = POSTERS[:8]
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(8, 3))
    y_true[:, 1] = 1  # Sci-Fi: every poster positive, so the most positives
    y_score = rng.random((8, 3))
    section = explained_examples_html(classifier, paths, y_true, y_score, ["Drama", "Sci-Fi", "Action"], n_genres=2)
    assert section.split("<h3>")[1].startswith("Sci-Fi")
    assert section.count("<h3>") == 2
    assert section.count('src="data:image/jpeg;base64,') == section.count("<figure")
    assert 2 <= section.count("<figure") <= 8
    intro = "Grad-CAM (Selvaraju et al. 2017) at efficientnet_lite0 stage 'head + stage7, stage6, stage5' (last conv"
    assert intro in section


def test_explained_examples_html_checks_its_inputs(lite0):
    """Check mismatched shapes and genres the model lacks are refused with what was expected."""
    classifier = _classifier(lite0)
    with pytest.raises(PosterGenreError, match=r"expected y_true and y_score of shape \(2, 1\)"):
        explained_examples_html(classifier, POSTERS[:2], np.ones((3, 1)), np.ones((3, 1)), ["Drama"])
    with pytest.raises(PosterGenreError, match="genres Musical are not the model's; expected some of Action"):
        explained_examples_html(classifier, POSTERS[:2], np.ones((2, 1)), np.ones((2, 1)), ["Musical"])


def test_explained_examples_of_a_text_model_outline_its_text(lite0):
    """Check a text model's examples outline and list the text it reads on each poster, and image runs say nothing."""
    paths = POSTERS[:6]
    rng = np.random.default_rng(1)
    y_true, y_score = rng.integers(0, 2, size=(6, 2)), rng.random((6, 2))
    y_true[:, 0] = 1
    found = {paths[0]: [_text_line("NIGHTMARE", 10, 30, 120, 60)]}

    def section(lines_by_path) -> str:
        classifier = _text_classifier(lite0, "late")
        classifier.read_poster_text = lambda path: lines_by_path.get(Path(path), [])
        return explained_examples_html(classifier, paths, y_true, y_score, ["Drama", "Action"], n_genres=1, per_kind=3)

    boxed, no_text = section(found), section({})

    def figures(html: str) -> dict[str, str]:
        return dict(zip(re.findall(r'alt="([^"]+)"', html), re.findall(r'src="([^"]+)"', html), strict=True))

    assert paths[0].name in figures(boxed) and len(figures(boxed)) >= 2
    for name, source in figures(boxed).items():
        assert (source != figures(no_text)[name]) == (name == paths[0].name), name
    assert boxed.count("text read (OCR): 1 &quot;NIGHTMARE&quot; (0.90)") == 1
    assert boxed.count(html_escape(render.NO_TEXT)) == len(figures(boxed)) - 1
    assert "magenta outlines mark the lines it read (OCR)" in boxed
    image_only = explained_examples_html(
        _classifier(lite0, size=(64, 64)), paths, y_true, y_score, ["Drama", "Action"], n_genres=1, per_kind=3
    )
    assert "text read" not in image_only and "magenta" not in image_only
