"""Weights files: bundled ones, and those the user gives as a local file or an http(s) URL.

A URL is downloaded once into ``$POSTERGENRE_CACHE_DIR/weights`` (default: the user's cache
folder, ``~/.cache/postergenre``) and reused from there without the network. Nothing is ever
downloaded unless the user passed the URL. Files are read as tensors only: safetensors, or
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and containers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

EXPECTED_FORMAT = "a PyTorch state dict (parameter names -> tensors), .pth or .safetensors"
_CHUNK = 1 << 20
_MAX_LISTED = 5


def cache_dir() -> Path:
    """postergenre's cache folder (see :func:`postergenre.cache.cache_root`)."""
    from postergenre.cache import cache_root

    return cache_root()


def weights_cache_dir() -> Path:
    return cache_dir() / "weights"


def resolve_weights(spec: str | Path, sha256: str | None = None) -> Path:
    """A local weights file for ``spec``: a path as it is, or an http(s) URL downloaded once into the cache.

    ``sha256`` (or a ``#sha256=HEX`` fragment on the URL) is checked; a download that does not match
    is deleted and raises, so a bad file never enters the cache.
    """
    text = str(spec)
    if text.startswith(("http://", "https://")):
        url, fragment_digest = _split_digest_fragment(text)
        return _cached_download(url, _normalise_digest(sha256 or fragment_digest))
    path = Path(text).expanduser()
    if not path.is_file():
        raise PosterGenreError(f"weights file {path} does not exist; pass {EXPECTED_FORMAT}, or an http(s) URL")
    if sha256:
        _check_digest(path, _file_digest(path), _normalise_digest(sha256))
    return path


def _split_digest_fragment(url: str) -> tuple[str, str | None]:
    base, _, fragment = url.partition("#")
    match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    return base, match.group(1) if match else None


def _normalise_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise PosterGenreError(f"sha256 {sha256!r} is not 64 hexadecimal digits")
    return digest


def _cache_name(url: str) -> str:
    # The URL's own file name keeps the suffix that picks the reader; the hash keeps two URLs
    # with the same file name apart.
    basename = unquote(Path(urlsplit(url).path).name)
    basename = re.sub(r"[^A-Za-z0-9._-]", "_", basename) or "weights.pth"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{basename}"


def _cached_download(url: str, sha256: str | None) -> Path:
    target = weights_cache_dir() / _cache_name(url)
    if target.is_file():
        logger.info("weights for %s: using the cached %s", url, target)
        if sha256:
            _check_cached_digest(target, sha256, url)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary, digest = _download(url, target.parent)
    try:
        if sha256:
            _check_digest(url, digest, sha256)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    _digest_file(target).write_text(digest + "\n")
    logger.info("weights for %s: downloaded to %s (sha256 %s)", url, target, digest)
    return target


def _download(url: str, folder: Path) -> tuple[Path, str]:
    """``url`` into a temporary file in ``folder`` (renamed by the caller); its sha256."""
    response = _open_url(url)
    handle, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    temporary = Path(name)
    try:
        with response, os.fdopen(handle, "wb") as file:
            digest, n_bytes = _copy_with_progress(response, file, url)
        expected = int(response.headers.get("Content-Length") or n_bytes)
        if n_bytes != expected:
            raise PosterGenreError(f"download of {url} stopped after {n_bytes} of {expected} bytes; try again")
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary, digest


def _open_url(url: str):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "postergenre"})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        raise PosterGenreError(f"could not download weights from {url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PosterGenreError(
            f"could not download weights from {url}: {reason}; download the file yourself and pass its path"
        ) from error


def _copy_with_progress(response, file, url: str) -> tuple[str, int]:
    from tqdm.auto import tqdm

    digest, n_bytes = hashlib.sha256(), 0
    total = int(response.headers.get("Content-Length") or 0) or None
    # disable=None: a bar on a terminal, silence in logs and tests.
    with tqdm(total=total, unit="B", unit_scale=True, desc=Path(urlsplit(url).path).name, disable=None) as bar:
        while chunk := response.read(_CHUNK):
            file.write(chunk)
            digest.update(chunk)
            n_bytes += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), n_bytes


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(source, actual: str, expected: str) -> None:
    if actual != expected:
        raise PosterGenreError(
            f"weights {source} have sha256 {actual}, expected {expected}; check the URL or file and the checksum"
        )


def _check_cached_digest(target: Path, sha256: str, url: str) -> None:
    # The digest recorded at download time saves re-reading hundreds of megabytes on each run.
    recorded = _digest_file(target)
    actual = recorded.read_text().strip() if recorded.is_file() else _file_digest(target)
    if actual != sha256:
        target.unlink(missing_ok=True)
        recorded.unlink(missing_ok=True)
        raise PosterGenreError(
            f"cached weights {target} (from {url}) have sha256 {actual}, expected {sha256}; the cached file was "
            "deleted: run again to download it afresh, and check the checksum if it fails again"
        )


def load_state_dict_file(path: str | Path) -> dict:
    """The tensors in a weights file: safetensors, or a PyTorch state dict read with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    import pickle

    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise PosterGenreError(
                f"weights {path} hold Python objects besides tensors ({refused.group(1)}), which are not loaded for "
                f"safety; save model.state_dict() instead (or as .safetensors). Expected {EXPECTED_FORMAT}"
            ) from error
        raise PosterGenreError(
            f"cannot read weights {path}: damaged or not a PyTorch file; expected {EXPECTED_FORMAT}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise PosterGenreError(f"cannot read weights {path}: {error}; expected {EXPECTED_FORMAT}") from error
    return _as_state_dict(content, path)


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise PosterGenreError(f"cannot read weights {path} as safetensors: {error}") from error


def _as_state_dict(content, path: Path) -> dict:
    import torch

    # Training checkpoints often wrap the state dict; DataParallel prefixes every key with "module.".
    if isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise PosterGenreError(f"weights {path} are not a state dict; expected {EXPECTED_FORMAT}")
    if content and all(key.startswith("module.") for key in content):
        content = {key.removeprefix("module."): value for key, value in content.items()}
    return content


def load_strict(module, state_dict: dict, source: str) -> None:
    """Load ``state_dict`` into ``module``, every key and shape matching, or say what does not."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems = [
        _listed(f"{len(missing)} missing keys", missing),
        _listed(f"{len(unexpected)} unexpected keys", unexpected),
        _listed(f"{len(reshaped)} keys of another shape (file vs module)", reshaped),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        name = getattr(module, "name", "") or type(module).__name__
        raise PosterGenreError(
            f"weights {source} do not fit backbone {name}: {'; '.join(problems)}. Expected {EXPECTED_FORMAT} "
            f"with the keys of {type(module).__name__}.state_dict()"
        )
    module.load_state_dict(state_dict, strict=True)


def _listed(what: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = ", ..." if len(keys) > _MAX_LISTED else ""
    return f"{what} ({', '.join(keys[:_MAX_LISTED])}{more})"
