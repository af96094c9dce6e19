"""User-given weights: local files, URLs downloaded once into the cache, checksums, strict loading.

ResNet50V2 and VGG16 weights are 100-550 MB; these tests use the same modules at width 1/8
(a few MB) through the registry, which exercises every step a full-size file goes through.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from postergenre.errors import PosterGenreError
from postergenre.models import backbones as registry
from postergenre.models.backbones import create_backbone
from postergenre.models.resnet_vgg import VGG16, ResNet50V2
from postergenre.models.weights import (
    cache_dir,
    load_state_dict_file,
    load_strict,
    resolve_weights,
    weights_cache_dir,
)

NARROW = 0.125


class _Server:
    """A static file server on 127.0.0.1 in a thread, counting the requests it answers."""

    def __init__(self, folder: Path):
        self.requests = 0
        handler = functools.partial(self._Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    class _Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            self.server.owner.requests += 1
            super().do_GET()

        def log_message(self, format, *args):
            pass

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path):
    """A folder served over http on a free local port; stopped at the end of the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = _Server(folder)
    server.folder = folder
    yield server
    if server.thread.is_alive():
        server.stop()


@pytest.fixture
def narrow_registry(monkeypatch):
    """resnet50v2 and vgg16 registered at width 1/8, so that their weights files are small."""
    for name in ("resnet50v2", "vgg16"):
        spec = registry.REGISTRY[name]
        monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(spec, options={"width": NARROW}))


def _state_dict(module_class, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {key: value.clone() for key, value in module_class(NARROW).state_dict().items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_is_cached_and_reused_offline(served):
    """Check a URL is downloaded once into the cache and reused after the server is gone."""
    torch.save(_state_dict(ResNet50V2), served.folder / "resnet.pth")
    first = resolve_weights(f"{served.url}/resnet.pth")
    assert first.parent == weights_cache_dir() and first.name.endswith("-resnet.pth")
    assert first.read_bytes() == (served.folder / "resnet.pth").read_bytes()
    assert not list(first.parent.glob("*.part"))

    served.stop()
    assert resolve_weights(f"{served.url}/resnet.pth") == first
    assert served.requests == 1


def test_checksum_mismatch_deletes_the_download(served):
    """Check a download with the wrong sha256 raises and leaves nothing in the cache."""
    (served.folder / "w.pth").write_bytes(b"not the weights you want")
    with pytest.raises(PosterGenreError, match=r"have sha256 [0-9a-f]{64}, expected 0{64}"):
        resolve_weights(f"{served.url}/w.pth", sha256="0" * 64)
    assert not [p for p in weights_cache_dir().iterdir() if "w.pth" in p.name]


def test_checksum_from_argument_or_url_fragment(served):
    """Check a matching sha256 passes, given as an argument or as a #sha256= fragment on the URL."""
    path = served.folder / "w.pth"
    path.write_bytes(b"weights")
    assert resolve_weights(f"{served.url}/w.pth", sha256=_sha256(path).upper()).read_bytes() == b"weights"
    assert resolve_weights(f"{served.url}/w.pth#sha256={_sha256(path)}").read_bytes() == b"weights"
    (served.folder / "other.pth").write_bytes(b"other")
    with pytest.raises(PosterGenreError, match=r"expected 1{64}"):
        resolve_weights(f"{served.url}/other.pth#sha256={'1' * 64}")


def test_cached_file_checked_against_a_later_checksum(served):
    """Check a cached download that does not match a checksum given later is deleted, with advice."""
    (served.folder / "w.pth").write_bytes(b"weights")
    cached = resolve_weights(f"{served.url}/w.pth")
    with pytest.raises(PosterGenreError, match="the cached file was deleted: run again"):
        resolve_weights(f"{served.url}/w.pth", sha256="2" * 64)
    assert not cached.exists()


def test_download_errors_name_the_url(served):
    """Check a missing file on the server raises with the URL and the HTTP status."""
    with pytest.raises(PosterGenreError, match=r"could not download weights from http://127.*/absent.pth: HTTP 404"):
        resolve_weights(f"{served.url}/absent.pth")


def test_local_path_used_as_is(tmp_path):
    """Check a local file is returned where it lies, checked if a sha256 is given; a missing one raises."""
    path = tmp_path / "w.safetensors"
    save_file(_state_dict(VGG16), str(path))
    assert resolve_weights(path) == path
    assert resolve_weights(str(path), sha256=_sha256(path)) == path
    with pytest.raises(PosterGenreError, match=r"expected 3{64}"):
        resolve_weights(path, sha256="3" * 64)
    assert path.exists()  # the user's own file is never deleted
    with pytest.raises(PosterGenreError, match=r"weights file .*nothing.pth does not exist"):
        resolve_weights(tmp_path / "nothing.pth")


def test_bad_checksum_text():
    """Check a sha256 that is not 64 hex digits is refused before any download."""
    with pytest.raises(PosterGenreError, match="not 64 hexadecimal digits"):
        resolve_weights("http://127.0.0.1:9/w.pth", sha256="abc")


def test_cache_folder(monkeypatch, tmp_path):
    """Check the cache is $POSTERGENRE_CACHE_DIR/weights, else the user's cache folder."""
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "c"))
    assert weights_cache_dir() == tmp_path / "c" / "weights"
    monkeypatch.delenv("POSTERGENRE_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "postergenre"


def test_create_backbone_from_url(served, narrow_registry):
    """Check resnet50v2 loads the user's weights from a URL, then from the cache with the server stopped."""
    state = _state_dict(ResNet50V2, seed=1)
    torch.save(state, served.folder / "resnet50v2.pth")
    url = f"{served.url}/resnet50v2.pth"
    backbone = create_backbone("resnet50v2", weights=url)
    assert backbone.pretrained and backbone.weights_source == url
    assert all(torch.equal(value, state[key]) for key, value in backbone.state_dict().items())

    served.stop()
    again = create_backbone("resnet50v2", weights=url)
    assert torch.equal(again.stem.conv.weight, state["stem.conv.weight"])
    logits = again.eval().imagenet_logits(torch.zeros(1, 3, 32, 32))
    assert logits.shape == (1, 1000)


def test_create_backbone_from_safetensors_file(tmp_path, narrow_registry):
    """Check vgg16 loads a local safetensors file with torchvision's key names."""
    state = _state_dict(VGG16, seed=2)
    assert "features.28.weight" in state and "classifier.6.weight" in state  # torchvision's layout
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    backbone = create_backbone("vgg16", weights=path)
    assert torch.equal(backbone.classifier[6].weight, state["classifier.6.weight"])


def test_strict_load_names_file_and_keys(tmp_path, narrow_registry):
    """Check weights of another network are refused, naming the file and the first mismatched keys."""
    path = tmp_path / "vgg.pth"
    torch.save(_state_dict(VGG16), path)
    with pytest.raises(PosterGenreError, match=r"weights .*vgg.pth do not fit backbone resnet50v2: \d+ missing keys "):
        create_backbone("resnet50v2", weights=path)
    with pytest.raises(PosterGenreError, match=r"unexpected keys \(features.0.weight, features.0.bias, "):
        create_backbone("resnet50v2", weights=path)


def test_strict_load_names_shape_mismatches(tmp_path):
    """Check weights of the right network at another width are refused with the shapes."""
    path = tmp_path / "resnet.pth"
    torch.save(_state_dict(ResNet50V2), path)
    wider = ResNet50V2(2 * NARROW)
    with pytest.raises(PosterGenreError, match=r"keys of another shape \(file vs module\) \(stem.conv.weight \(8, 3"):
        load_strict(wider, load_state_dict_file(path), source=str(path))


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    """Check a .pth holding arbitrary Python objects is not unpickled."""
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "extra": _NotATensor()}, path)
    with pytest.raises(PosterGenreError, match="hold Python objects besides tensors"):
        load_state_dict_file(path)


def test_checkpoint_wrappers_are_unwrapped(tmp_path):
    """Check {'state_dict': ...} checkpoints and DataParallel's 'module.' prefixes load as plain state dicts."""
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {"module.a": torch.ones(2)}}, path)
    assert list(load_state_dict_file(path)) == ["a"]
    torch.save({"a": torch.ones(1), "epoch": 3}, path)
    with pytest.raises(PosterGenreError, match="are not a state dict"):
        load_state_dict_file(path)


def test_damaged_files_raise_with_their_name(tmp_path):
    """Check a truncated .pth or .safetensors raises a PosterGenreError naming the file."""
    for name in ("broken.pth", "broken.safetensors"):
        (tmp_path / name).write_bytes(b"\x00\x01garbage")
        with pytest.raises(PosterGenreError, match=f"cannot read weights .*{name}"):
            load_state_dict_file(tmp_path / name)
