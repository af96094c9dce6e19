"""Pooled backbone features for many posters, computed once and cached on disk.

The steps of :func:`extract_features`: hash every file's bytes, look the hashes up in the cache
folder of this spec (backbone, weights, preprocessing; mirror images apart), and compute only the missing ones:
threads decode and resize posters while the backbone (ONNX Runtime on a CPU, PyTorch on a GPU)
runs on the previous batch, and each batch is appended to the cache as soon as it is done.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from postergenre.data.images import ImageError, open_rgb
from postergenre.errors import PosterGenreError
from postergenre.features import cache as _cache
from postergenre.features.cache import FeatureStore, file_digest
from postergenre.models.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

# The input measured for posters in benchmarks/crop_vs_whole.py (EfficientNet-Lite0, per-genre
# logistic regression, validation / test macro AUC over 21 genres; ONNX Runtime forward images/s on
# 2 busy cores):
#   stretch 320x224  0.780 / 0.755  31     stretch 288x192  0.776 / 0.751  39
#   stretch 256x160  0.776 / 0.743  51     centre crop 224  0.767 / 0.751  38 (cuts titles and faces off)
#   pad 224x224      0.764 / 0.738  38
# The whole poster stretched to a tall input wins. 256x160 was the default while the cold-run budget
# seemed to need its speed; with the default MLP head, pooled stages and poster text, 320x224 measured
# more (validation macro AUC, image / late fusion with text, 0.795 / 0.821 against 0.788 / 0.816; test
# 0.818 / 0.373 against 0.807 / 0.358 AUC / AP) at 84 against 127 images/s here, and a cold
# image-only run still fits 120 s. 384x256 measured 0.798 / 0.824 on validation (0.821 / 0.374 test)
# but at 69 images/s it does not fit. So: the backbone's native width, stretched to 320/224 times as
# tall (a 2:3 poster is a little taller; multiples of 32 round it anyway).
POSTER_RESIZE = "stretch"
POSTER_ASPECT = 320 / 224  # height / width of the input
POSTER_WIDTH_SCALE = 1.0  # of the backbone's native input width
# Test-time flip (the mean of a poster's and its mirror image's features) added only 0.002 validation
# AUC at 320x224 for twice the forward passes, which the time budget cannot afford.
DEFAULT_FLIP = False


@dataclass
class FeatureSet:
    """Pooled features of posters: ``values[i]`` belongs to ``ids[i]``.

    ``values`` is float32 ``(n_samples, num_features)`` and may be a read-only memory map of the
    cache. Posters that could not be read or decoded are left out of ``ids`` and listed in
    ``failed`` with the reason. ``spec`` says how the features were made.
    """

    ids: list[str]
    values: np.ndarray
    failed: dict[str, str] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, ids: Iterable[str]) -> np.ndarray:
        """The rows for ``ids``, in that order."""
        position = {id_: i for i, id_ in enumerate(self.ids)}
        ids = list(ids)
        absent = [id_ for id_ in ids if id_ not in position]
        if absent:
            raise KeyError(f"no features for {len(absent)} id(s), e.g. {', '.join(absent[:5])}")
        return np.asarray(self.values[[position[id_] for id_ in ids]])


def _build_backbone(name: str, *, pretrained: bool = True, weights=None, pooled_stages: int | None = None):
    from postergenre.models.backbones import create_backbone

    return create_backbone(name, pretrained=pretrained, weights=weights, pooled_stages=pooled_stages)


def _native_preprocessing(name: str) -> Preprocessing:
    """A backbone's own preprocessing, read from the registry: building even a network with random
    weights to ask it costs about a second of a warm train."""
    from postergenre.models.backbones import get_spec

    return get_spec(name).preprocessing


def poster_preprocessing(native: Preprocessing, resize: str | None = None) -> Preprocessing:
    """The backbone's own preprocessing (from its weights) with a resize policy for posters.

    By default the measured best policy replaces ImageNet's centre crop; a backbone whose own policy
    already keeps the whole poster (a network trained on posters) keeps its own. ``stretch`` applied to
    a centre-crop backbone also makes the input tall, like a poster (see :data:`POSTER_ASPECT`).
    """
    resize = resize or (POSTER_RESIZE if native.resize == "center_crop" else native.resize)
    if resize == native.resize:
        return native
    if resize == "stretch":
        # Multiples of 32 keep every stride-2 stage of the network at an even size.
        width = 32 * max(1, round(native.input_size[1] * POSTER_WIDTH_SCALE / 32))
        height = max(width + 32, 32 * round(width * POSTER_ASPECT / 32))  # tall even when tiny
        return native.with_policy("stretch", (height, width))
    return native.with_policy(resize)


def default_preprocessing(backbone: str, *, resize: str | None = None) -> Preprocessing:
    """The measured best preprocessing for posters with this backbone, or its own with another ``resize``."""
    return poster_preprocessing(_native_preprocessing(backbone), resize)


def draft_size(preprocessing: Preprocessing) -> tuple[int, int]:
    """The smallest (width, height) a poster may be decoded at without losing detail the resize keeps."""
    height, width = preprocessing.input_size
    if preprocessing.resize == "center_crop":
        side = math.ceil(max(height, width) / preprocessing.crop_fraction)
        return side, side
    return width, height


def load_input(source, preprocessing: Preprocessing, *, name: str | None = None) -> np.ndarray:
    """A poster file (path or bytes) as the network's float32 ``(3, h, w)`` input; raises ImageError."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    image = open_rgb(source, name=name, draft=draft_size(preprocessing))
    return preprocessing(image)


def hash_files(image_paths: dict[str, Path], workers: int) -> tuple[dict[str, str], dict[str, str]]:
    """Content digests by id, and the ids whose files could not be read, with the reason."""

    from postergenre.cache import content_digest, known_digest, save_digests

    def digest(path: Path, hash_it: bool = True) -> str | Exception | None:
        try:
            return content_digest(path) if hash_it else known_digest(path)
        except OSError as exc:
            return exc

    # Files hashed before need only a stat, cheaper in this thread than handed to a pool.
    results = {id_: digest(path, hash_it=False) for id_, path in image_paths.items()}
    unknown = [id_ for id_, result in results.items() if result is None]
    if unknown:
        with ThreadPoolExecutor(workers) as pool:
            results.update(zip(unknown, pool.map(digest, [image_paths[id_] for id_ in unknown]), strict=True))
        save_digests()
    digests, failed = {}, {}
    for id_, path in image_paths.items():
        result = results[id_]
        if isinstance(result, Exception):
            failed[id_] = f"{path}: cannot be read ({result.strerror or result})"
        else:
            digests[id_] = result
    return digests, failed


def _decode(digest: str, path: Path, preprocessing: Preprocessing) -> np.ndarray | str:
    """The network input for one file, or why there is none."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    if file_digest(data) != digest:
        return f"{path}: changed while features were being extracted; run again"
    try:
        return load_input(data, preprocessing, name=str(path))
    except ImageError as exc:
        return str(exc)


def decoded_batches(
    items: list[tuple[str, Path]], preprocessing: Preprocessing, batch_size: int, workers: int
) -> Iterator[tuple[list[str], np.ndarray | None, dict[str, str]]]:
    """(digests, inputs, failures by digest) per batch of ``items`` (digest, path), decoded in threads.

    At most three batches are in flight, so that memory stays bounded however many posters there
    are, while the threads decode the next batches during the forward pass of this one.
    """
    queue = iter(items)
    with ThreadPoolExecutor(workers) as pool:

        def submit(n: int) -> list:
            return [(d, pool.submit(_decode, d, p, preprocessing)) for _, (d, p) in zip(range(n), queue, strict=False)]

        pending = deque(submit(3 * batch_size))
        while pending:
            digests, arrays, failures = [], [], {}
            for _ in range(min(batch_size, len(pending))):
                digest, future = pending.popleft()
                pending.extend(submit(1))
                result = future.result()
                if isinstance(result, str):
                    failures[digest] = result
                else:
                    digests.append(digest)
                    arrays.append(result)
            yield digests, (np.stack(arrays) if arrays else None), failures


class OnnxEngine:
    """The backbone's pooled forward through ONNX Runtime (CPU)."""

    name = "onnx"

    def __init__(self, session):
        self.session = session

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": inputs})[0]


class TorchEngine:
    """The backbone's pooled forward in PyTorch, on a GPU or (as a fallback) the CPU."""

    name = "torch"

    def __init__(self, backbone, device: str):
        self.backbone = backbone.eval().to(device)
        self.device = device

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.backbone(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()


def make_engine(backbone, input_size: tuple[int, int], digest: str, *, device: str | None, root: Path):
    """ONNX Runtime on a CPU (exported once, cached under ``root``); PyTorch on a GPU."""
    import torch

    from postergenre.features.onnx_export import onnx_backbone

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        session = onnx_backbone(root, backbone, input_size, digest)
        if session is not None:
            return OnnxEngine(session)
    elif not device.startswith("cuda"):
        raise PosterGenreError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return TorchEngine(backbone, device)


def forward(engine, inputs: np.ndarray, mirror: bool) -> np.ndarray:
    """Pooled features of a batch, or of its horizontal mirror images."""
    return engine(np.ascontiguousarray(inputs[..., ::-1]) if mirror else inputs)


def compute_missing(
    stores: dict[str, FeatureStore],
    items: list[tuple[str, Path]],
    engine,
    preprocessing: Preprocessing,
    *,
    batch_size: int,
    progress: bool,
    workers: int,
) -> dict[str, str]:
    """Compute and store the features of ``items`` (digest, path) that each view's store lacks;
    returns failures by digest. Each poster is decoded once for all views."""
    from tqdm.auto import tqdm

    missing = {view: set(store.missing(d for d, _ in items)) for view, store in stores.items()}
    failures = {}
    backbone = next(iter(stores.values())).spec["backbone"]
    with tqdm(total=len(items), desc=f"features {backbone}", unit="img", disable=not progress) as bar:
        for digests, inputs, failed in decoded_batches(items, preprocessing, batch_size, workers):
            for view, store in stores.items():
                chosen = [i for i, d in enumerate(digests) if d in missing[view]]
                if chosen:
                    # Usually every poster of the batch is missing: no copy of the batch then.
                    batch = inputs if len(chosen) == len(digests) else inputs[chosen]
                    store.append([digests[i] for i in chosen], forward(engine, batch, view == "mirror"))
            failures.update(failed)
            bar.update(len(digests) + len(failed))
    return failures


def open_stores(root: Path, spec: dict, flip: bool) -> dict[str, FeatureStore]:
    """One store per view the features need. The mirror images' features are kept apart from the
    posters', so that turning ``flip`` on computes only the mirrors and turning it off computes nothing."""
    views = ["plain", "mirror"] if flip else ["plain"]
    return {view: FeatureStore(root / "features", dict(spec, view=view)) for view in views}


def read_features(stores: dict[str, FeatureStore], digests: list[str]) -> np.ndarray:
    """The posters' features, or with a mirror store, the mean of poster and mirror (read-only either way)."""
    if len(stores) == 1:
        return stores["plain"].read(digests)
    values = (np.asarray(stores["plain"].read(digests)) + stores["mirror"].read(digests)) / 2
    values.setflags(write=False)
    return values


def extract_features(
    image_paths: dict[str, Path],
    backbone: str,
    *,
    preprocessing: Preprocessing | None = None,
    flip: bool = False,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    device: str | None = None,
    weights=None,
    cut: int | None = None,
    pooled_stages: int | None = None,
) -> FeatureSet:
    """Pooled ``backbone`` features of the posters ``image_paths`` ({id: file}), from the cache where it has them.

    ``preprocessing`` defaults to the backbone's own with the policy measured best for posters;
    ``flip`` averages each poster's features with its mirror image's. ``cache_dir`` defaults to
    :func:`~postergenre.features.cache.cache_dir`. ``device``: ``"cpu"`` (ONNX Runtime), ``"cuda"``
    (PyTorch); default the GPU if there is one. Posters that cannot be read are reported in
    ``failed``; the others are still returned.

    ``pooled_stages``: the stages before the last whose pooled outputs join the features (default:
    the backbone's registered choice, see :func:`~postergenre.models.backbones.create_backbone`).

    ``cut`` (a stage number) returns instead the activation maps that enter that stage, flattened to
    ``(n_samples, C*h*w)`` float16 (see :mod:`postergenre.features.activations`); ``spec["map_shape"]``
    is ``(C, h, w)``.
    """
    if batch_size < 1:
        raise PosterGenreError(f"batch_size must be at least 1, got {batch_size}")
    if cut is not None and flip:
        raise PosterGenreError("flip averages pooled features; it does not apply to activation maps (cut)")
    root = Path(cache_dir) if cache_dir is not None else _cache.cache_dir()
    workers = min(4, os.cpu_count() or 1)
    start = time.perf_counter()

    model = _build_backbone(backbone, weights=weights, pooled_stages=0 if cut is not None else pooled_stages).eval()
    preprocessing = preprocessing or poster_preprocessing(model.preprocessing)
    if cut is not None:
        from postergenre.features.activations import BackbonePrefix

        model = BackbonePrefix(model, cut, preprocessing.input_size)
    digest = _weights_digest(model)
    spec = {
        "backbone": backbone,
        "weights": digest,
        "preprocessing": preprocessing.to_dict(),
        "num_features": int(model.num_features),
        **(model.spec() if cut is not None else {}),
    }
    if getattr(model, "pooled_stages", 0):  # absent when 0, so that features cached before stay valid
        spec["pooled_stages"] = int(model.pooled_stages)
    what = "features" if cut is None else f"activations before {model.stage}"
    stores = open_stores(root, spec, flip)

    digests, failed = hash_files(image_paths, workers)
    paths = {d: image_paths[id_] for id_, d in reversed(digests.items())}
    todo = list(dict.fromkeys(d for store in stores.values() for d in store.missing(digests.values())))
    engine_name, failures = "cache", {}
    if todo:
        engine = make_engine(model, preprocessing.input_size, digest, device=device, root=root)
        engine_name = engine.name
        items = [(d, paths[d]) for d in todo]
        failures = compute_missing(
            stores, items, engine, preprocessing, batch_size=batch_size, progress=progress, workers=workers
        )
        failed.update({id_: failures[d] for id_, d in digests.items() if d in failures})

    ids = [id_ for id_ in image_paths if id_ not in failed]
    values = read_features(stores, [digests[id_] for id_ in ids])
    computed = set(todo)
    counts = {
        "n_cached": sum(digests[i] not in computed for i in ids),
        "n_computed": sum(digests[i] in computed for i in ids),
    }
    logger.info(
        "%s %s: %d cached, %d computed, %d failed, in %.1f s (%s); cache %s",
        backbone,
        what,
        counts["n_cached"],
        counts["n_computed"],
        len(failed),
        time.perf_counter() - start,
        engine_name,
        root / "features",
    )
    spec = dict(spec, flip=bool(flip), engine=engine_name, cache=str(root / "features"), **counts)
    return FeatureSet(ids, values, failed, spec)


def _weights_digest(model) -> str:
    from postergenre.features.onnx_export import weights_digest

    return weights_digest(model)
