"""Feature extraction: the on-disk cache, ONNX parity, flip averaging, failures and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_poster
from torch import nn

from postergenre.cli import main
from postergenre.data.demo import demo_dataset_root
from postergenre.errors import PosterGenreError
from postergenre.features import cache_dir, extract_features, load_input
from postergenre.features import extract as extract_module
from postergenre.features.cache import FeatureStore
from postergenre.models.preprocessing import Preprocessing


class TinyBackbone(nn.Module):
    """A test double with the registry's Backbone interface: a small conv net, 7 pooled features."""

    def __init__(self, name: str = "tiny", seed: int = 0):
        super().__init__()
        self.name, self.num_features = name, 7
        self.preprocessing = Preprocessing((32, 24), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "center_crop")
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 7, 3, stride=2, padding=1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for tensor in [*self.parameters(), self.bn.running_mean]:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
        self.eval()

    def forward_features(self, x):
        return nn.functional.relu6(self.conv2(torch.relu(self.bn(self.conv1(x)))))

    def forward(self, x):
        return self.forward_features(x).mean((2, 3))


@pytest.fixture
def tiny_backbone(monkeypatch):
    """Route backbone creation to TinyBackbone (``weights`` picks its seed) and count the posters computed."""
    computed = []

    def build(name, *, pretrained=True, weights=None, pooled_stages=None):
        return TinyBackbone(name, seed=weights or 0)

    real_forward = extract_module.forward

    def spy(engine, inputs, mirror):
        computed.append(len(inputs))
        return real_forward(engine, inputs, mirror)

    monkeypatch.setattr(extract_module, "_build_backbone", build)
    monkeypatch.setattr(extract_module, "_native_preprocessing", lambda name: TinyBackbone(name).preprocessing)
    monkeypatch.setattr(extract_module, "forward", spy)
    return computed


@pytest.fixture
def posters(tmp_path) -> dict[str, Path]:
    """Six small random posters of various sizes."""
    folder = tmp_path / "posters"
    folder.mkdir()
    paths = {}
    for k in range(6):
        paths[f"tt{k:07d}"] = folder / f"tt{k:07d}.jpg"
        write_poster(paths[f"tt{k:07d}"], seed=k, size=(40 + 7 * k, 60 + 5 * k))
    return paths


def extract(paths, tmp_path, **kwargs):
    return extract_features(paths, "tiny", cache_dir=tmp_path / "cache", progress=False, **kwargs)


def reference_features(backbone: nn.Module, path: Path, preprocessing: Preprocessing, *, mirror: bool = False):
    x = torch.from_numpy(load_input(path, preprocessing))[None]
    with torch.no_grad():
        return backbone(x.flip(-1) if mirror else x)[0].numpy()


def test_second_call_reuses_cache(tiny_backbone, posters, tmp_path):
    """Check that a second extraction computes nothing and returns the same features."""
    first = extract(posters, tmp_path)
    second = extract(posters, tmp_path)
    assert tiny_backbone == [6]
    assert first.ids == second.ids == list(posters)
    assert second.values.shape == (6, 7) and second.values.dtype == np.float32
    np.testing.assert_array_equal(first.values, second.values)
    assert (second.spec["n_cached"], second.spec["n_computed"], second.spec["engine"]) == (6, 0, "cache")


def test_changed_image_recomputes_only_it(tiny_backbone, posters, tmp_path):
    """Check that changing one poster's bytes recomputes that poster alone."""
    before = extract(posters, tmp_path)
    write_poster(posters["tt0000002"], seed=99, size=(50, 70))
    after = extract(posters, tmp_path)
    assert tiny_backbone == [6, 1]
    changed = np.abs(np.asarray(after.values) - np.asarray(before.values)).max(axis=1) > 0
    assert changed.tolist() == [False, False, True, False, False, False]


def test_changed_preprocessing_or_weights_make_new_entries(tiny_backbone, posters, tmp_path):
    """Check that other preprocessing or weights compute anew, and leave the first cache intact."""
    base = TinyBackbone().preprocessing
    first = extract(posters, tmp_path, preprocessing=base)
    padded = extract(posters, tmp_path, preprocessing=base.with_policy("pad"))
    reweighted = extract(posters, tmp_path, preprocessing=base, weights=1)
    again = extract(posters, tmp_path, preprocessing=base)
    assert tiny_backbone == [6, 6, 6]
    assert padded.spec["preprocessing"]["resize"] == "pad"
    assert reweighted.spec["weights"] != first.spec["weights"]
    assert not np.allclose(first.values, padded.values) and not np.allclose(first.values, reweighted.values)
    assert again.spec["n_computed"] == 0


def test_flip_computes_only_the_mirrors(tiny_backbone, posters, tmp_path):
    """Check that turning flip on after a plain run computes just the mirror images, and off again nothing."""
    plain = extract(posters, tmp_path)
    flipped = extract(posters, tmp_path, flip=True)
    again = extract(posters, tmp_path)
    assert tiny_backbone == [6, 6]
    assert flipped.spec["flip"] and not np.allclose(plain.values, flipped.values)
    np.testing.assert_array_equal(plain.values, again.values)


def test_identical_posters_share_a_row(tiny_backbone, posters, tmp_path):
    """Check that two ids with byte-identical posters are computed once and get the same features."""
    shutil.copy(posters["tt0000001"], posters["tt0000004"])
    features = extract(posters, tmp_path)
    assert sum(tiny_backbone) == 5
    np.testing.assert_array_equal(features.select(["tt0000001"]), features.select(["tt0000004"]))


def test_failed_images_are_reported_and_the_rest_returned(tiny_backbone, posters, tmp_path):
    """Check that unreadable, non-image and truncated files land in failed with a reason."""
    posters["tt0000001"].write_bytes(b"not a picture")
    posters["tt0000002"].write_bytes(posters["tt0000002"].read_bytes()[:200])
    posters["tt0000009"] = tmp_path / "posters" / "absent.jpg"
    features = extract(posters, tmp_path)
    assert features.ids == ["tt0000000", "tt0000003", "tt0000004", "tt0000005"]
    assert features.values.shape == (4, 7)
    assert set(features.failed) == {"tt0000001", "tt0000002", "tt0000009"}
    assert "not an image file" in features.failed["tt0000001"]
    assert "tt0000002.jpg: cannot be decoded" in features.failed["tt0000002"]
    assert "absent.jpg: cannot be read" in features.failed["tt0000009"]


def test_onnx_matches_pytorch(tiny_backbone, posters, tmp_path):
    """Check that features from the ONNX export equal the PyTorch backbone's within 1e-4."""
    features = extract(posters, tmp_path, device="cpu")
    assert features.spec["engine"] == "onnx"
    height, width = features.spec["preprocessing"]["input_size"]
    assert list(tmp_path.glob(f"cache/onnx/tiny-*-{height}x{width}.onnx"))
    backbone = TinyBackbone()
    pre = Preprocessing.from_dict(features.spec["preprocessing"])
    expected = [reference_features(backbone, posters[id_], pre) for id_ in features.ids]
    assert np.abs(np.asarray(features.values) - np.stack(expected)).max() <= 1e-4


def test_flip_averages_poster_and_mirror(tiny_backbone, posters, tmp_path):
    """Check that flip=True gives the mean of the poster's and its mirror image's features."""
    features = extract(posters, tmp_path, flip=True)
    backbone = TinyBackbone()
    pre = Preprocessing.from_dict(features.spec["preprocessing"])
    for id_, row in zip(features.ids, features.values, strict=True):
        plain = reference_features(backbone, posters[id_], pre)
        mirrored = reference_features(backbone, posters[id_], pre, mirror=True)
        assert not np.allclose(plain, mirrored)
        np.testing.assert_allclose(row, (plain + mirrored) / 2, atol=1e-4)


def test_default_policy_keeps_the_whole_poster(tiny_backbone, posters, tmp_path):
    """Check that by default a centre-crop backbone gets the poster policy: a tall input, its own statistics."""
    pre = extract(posters, tmp_path).spec["preprocessing"]
    height, width = pre["input_size"]
    assert pre["resize"] == extract_module.POSTER_RESIZE and height > width and height % 32 == width % 32 == 0
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.25, 0.25, 0.25]


def test_poster_policy_sizes():
    """Check the poster input for a 224 backbone, and that a backbone already keeping the whole poster keeps its own."""
    lite = Preprocessing((224, 224), (0.5,) * 3, (0.5,) * 3, "center_crop")
    assert extract_module.poster_preprocessing(lite).input_size == (320, 224)
    assert extract_module.poster_preprocessing(lite, "pad").input_size == (224, 224)
    assert extract_module.poster_preprocessing(lite, "center_crop") == lite
    scratch = Preprocessing((300, 300), (0.5,) * 3, (0.5,) * 3, "stretch")
    assert extract_module.poster_preprocessing(scratch) == scratch


@pytest.mark.parametrize("shape", [(7, 5, 3), (2, 7, 5, 3)])
def test_normalize_scales_each_channel_and_puts_channels_first(shape):
    """Check normalize gives (x / 255 - mean) / std, channels first and contiguous, for one image and a batch."""
    preprocessing = Preprocessing((7, 5), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)

    actual = preprocessing.normalize(pixels)

    expected = (pixels / 255 - np.array(preprocessing.mean)) / np.array(preprocessing.std)
    assert actual.dtype == np.float32 and actual.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(actual, np.moveaxis(expected, -1, -3), atol=1e-6)


@pytest.mark.parametrize("flip", [False, True])
def test_values_are_read_only(tiny_backbone, posters, tmp_path, flip):
    """Check that returned features cannot be written through (they may map the cache file)."""
    features = extract(posters, tmp_path, flip=flip)
    with pytest.raises(ValueError, match="read-only"):
        features.values[0, 0] = 1.0


def test_select_names_missing_ids(tiny_backbone, posters, tmp_path):
    """Check that select() returns rows in the asked order and names ids it has no features for."""
    features = extract(posters, tmp_path)
    np.testing.assert_array_equal(features.select(["tt0000003", "tt0000000"]), features.values[[3, 0]])
    with pytest.raises(KeyError, match="no features for 1 id"):
        features.select(["tt9999999"])


def test_store_survives_an_interrupted_append(tmp_path):
    """Check that rows written without their index line, and a torn index line, lose nothing indexed."""
    spec = {"backbone": "tiny", "num_features": 3}
    store = FeatureStore(tmp_path, spec)
    store.append(["a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    with open(store.data_path, "ab") as data:  # a crash after writing rows, before the index
        data.write(np.full(3, 7, np.float32).tobytes())
    with open(store.index_path, "a") as index:  # a crash in the middle of an index line
        index.write("c\t")
    reopened = FeatureStore(tmp_path, spec)
    assert reopened.rows == {"a": 0, "b": 1}
    reopened.append(["c", "a"], np.array([[8, 8, 8], [9, 9, 9]], np.float32))
    again = FeatureStore(tmp_path, spec)
    np.testing.assert_array_equal(again.read(["c", "a", "b"]), [[8, 8, 8], [0, 1, 2], [3, 4, 5]])


def test_bad_arguments_are_named(tiny_backbone, posters, tmp_path):
    """Check that a bad batch size or device is refused with the valid choices."""
    with pytest.raises(PosterGenreError, match="batch_size must be at least 1, got 0"):
        extract(posters, tmp_path, batch_size=0)
    with pytest.raises(PosterGenreError, match="unknown device 'tpu'; expected 'cpu', 'cuda'"):
        extract(posters, tmp_path, device="tpu")


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    """Check that POSTERGENRE_CACHE_DIR chooses the cache folder."""
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


def test_cli_extracts_then_reuses(tiny_backbone, tiny_dataset, tmp_path, monkeypatch, capsys):
    """Check that `postergenre features` computes the tiny dataset's posters, then finds them cached."""
    monkeypatch.setattr("postergenre.cli.COMMANDS", ["features"])
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "cli-cache"))
    argv = ["-q", "features", str(tiny_dataset), "--backbone", "tiny", "--resize", "pad", "--batch-size", "8"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "40 posters x 7" in first and "0 cached, 40 computed, 0 failed" in first
    assert "40 cached, 0 computed" in second
    assert f"cache: {tmp_path / 'cli-cache'}" in second


@pytest.mark.slow
def test_onnx_matches_pytorch_on_real_posters(tmp_path):
    """Check ONNX vs PyTorch parity (<= 1e-4) for efficientnet_lite0 on a few real poster thumbnails."""
    backbones = pytest.importorskip("postergenre.models.backbones")
    if "efficientnet_lite0" not in backbones.list_backbones():
        pytest.skip("efficientnet_lite0 is not registered")
    paths = dict(sorted((p.stem, p) for p in (demo_dataset_root() / "images").glob("*.jpg"))[:4])
    features = extract_features(paths, "efficientnet_lite0", cache_dir=tmp_path, device="cpu", progress=False)
    assert features.spec["engine"] == "onnx"
    backbone = backbones.create_backbone("efficientnet_lite0").eval()
    pre = Preprocessing.from_dict(features.spec["preprocessing"])
    expected = np.stack([reference_features(backbone, paths[id_], pre) for id_ in features.ids])
    assert np.abs(np.asarray(features.values) - expected).max() <= 1e-4


def test_content_digest_is_remembered_until_the_file_changes(tmp_path):
    """Check content_digest equals sha256 of the bytes, and a rewritten file (same size too) is hashed again."""
    import hashlib
    import os

    from postergenre.cache import content_digest

    poster = tmp_path / "poster.jpg"
    poster.write_bytes(b"first")
    assert content_digest(poster) == hashlib.sha256(b"first").hexdigest() == content_digest(poster)
    status = poster.stat()
    poster.write_bytes(b"other")  # same size; a new modification time
    os.utime(poster, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    assert content_digest(poster) == hashlib.sha256(b"other").hexdigest()
    with pytest.raises(OSError):
        content_digest(tmp_path / "missing.jpg")


def _forget_digests(monkeypatch):
    """A fresh process's view: nothing hashed yet, no digest file read."""
    from postergenre import cache

    monkeypatch.setattr(cache, "_DIGESTS", {})
    monkeypatch.setattr(cache, "_READ_FROM", set())
    monkeypatch.setattr(cache, "_NEW_DIGESTS", [])


def test_digests_of_settled_files_are_kept_on_disk(tmp_path, monkeypatch):
    """Check that a later process takes settled files' digests from the cache folder without hashing,
    that a file changed just now is not written down, and that a torn line in the file is skipped."""
    import hashlib
    import os
    import time

    from postergenre import cache

    old, fresh = tmp_path / "old.jpg", tmp_path / "fresh.jpg"
    old.write_bytes(b"settled poster")
    fresh.write_bytes(b"just written")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    _forget_digests(monkeypatch)
    expected = {p: cache.content_digest(p) for p in (old, fresh)}
    cache.save_digests()
    digest_file = cache.cache_root() / cache.DIGESTS_FILE
    written = digest_file.read_text()
    assert expected[old] in written and expected[fresh] not in written  # the fresh file may change again
    with open(digest_file, "a") as handle:
        handle.write("1\t2\t3\t4\tdeadbeef")  # an interrupted write

    _forget_digests(monkeypatch)
    hashed = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(cache.hashlib, "sha256", lambda data: hashed.append(data) or real_sha256(data))
    assert cache.content_digest(old) == expected[old]
    assert cache.content_digest(fresh) == expected[fresh]
    assert hashed == [b"just written"]


def test_pooled_stages_are_cached_apart_and_start_with_the_last_stage(posters, tmp_path):
    """Check lite0's features with and without pooled stages are cached apart (each in its own store and
    ONNX file), both match PyTorch, and the pooled ones start with the last stage's average."""
    from postergenre.models.backbones import create_backbone

    small = extract_module.default_preprocessing("efficientnet_lite0").with_policy("stretch", (64, 32))
    cache = tmp_path / "cache"
    kwargs = {"preprocessing": small, "cache_dir": cache, "progress": False}
    alone = extract_features(posters, "efficientnet_lite0", pooled_stages=0, **kwargs)
    pooled = extract_features(posters, "efficientnet_lite0", **kwargs)

    assert alone.values.shape == (6, 1280) and pooled.values.shape == (6, 1904)
    assert "pooled_stages" not in alone.spec and pooled.spec["pooled_stages"] == 3
    assert pooled.spec["n_computed"] == 6 and len(list((cache / "features").iterdir())) == 2
    assert sorted(p.name.endswith("-pooled3.onnx") for p in (cache / "onnx").glob("*.onnx")) == [False, True]
    np.testing.assert_allclose(pooled.values[:, :1280], alone.values, atol=1e-4)
    backbone = create_backbone("efficientnet_lite0").eval()
    expected = reference_features(backbone, posters["tt0000002"], small)
    np.testing.assert_allclose(pooled.select(["tt0000002"])[0], expected, atol=1e-4)
