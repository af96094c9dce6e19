"""The frozen backbone as an ONNX model, exported once and run with ONNX Runtime.

On a CPU, ONNX Runtime runs the pooled backbone several times faster than eager PyTorch (it fuses
batch norm into convolutions and plans memory once). The export is cached in the cache folder,
keyed by backbone, weights digest and input size, and checked against PyTorch before first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from postergenre.errors import PosterGenreError

logger = logging.getLogger(__name__)

OPSET = 17
# Largest |ONNX - PyTorch| accepted on the check batch; measured ~1e-5 on real posters.
PARITY_TOLERANCE = 1e-4


def weights_digest(backbone) -> str:
    """A digest of every parameter and buffer: the identity of the weights, however they were loaded."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def onnx_path(root: Path, backbone, input_size: tuple[int, int], digest: str) -> Path:
    """Where the export of these weights at this input size lives under the cache folder ``root``."""
    height, width = input_size
    pooled = f"-pooled{backbone.pooled_stages}" if getattr(backbone, "pooled_stages", 0) else ""
    return Path(root) / "onnx" / f"{backbone.name}-{digest}-{height}x{width}{pooled}.onnx"


def export_onnx(backbone, input_size: tuple[int, int], path: Path) -> Path:
    """Write the backbone's pooled forward (input ``(B, 3, h, w)``, output ``(B, num_features)``)
    to ``path``, with a dynamic batch axis; written under a temporary name and moved into place."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    was_training = backbone.training
    backbone.eval()
    try:
        # TODO: the TorchScript exporter is deprecated since torch 2.9; move to dynamo=True when it
        # is removed (it needs onnxscript, and is slower to export for the same graph).
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                backbone.cpu(),
                torch.zeros(1, 3, *input_size),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["features"],
                dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
            )
        os.replace(tmp, path)
    finally:
        backbone.train(was_training)
        tmp.unlink(missing_ok=True)
    return path


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session using ``threads`` cores for each operator (default: all)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads spin by default; the decoding threads need those cores between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(session, backbone, inputs: np.ndarray) -> float:
    """The largest |ONNX - PyTorch| over the features of ``inputs``."""
    import torch

    with torch.no_grad():
        expected = backbone.eval().cpu()(torch.from_numpy(inputs)).numpy()
    actual = session.run(None, {"input": inputs})[0]
    return float(np.abs(actual - expected).max())


def onnx_backbone(root: Path, backbone, input_size: tuple[int, int], digest: str, *, threads: int | None = None):
    """An ONNX Runtime session for the backbone, exported on first use and checked against PyTorch.

    Returns ``None`` (and logs why) when the export fails or disagrees with PyTorch, so that the
    caller can fall back to PyTorch.
    """
    path = onnx_path(root, backbone, input_size, digest)
    fresh = not path.exists()
    try:
        if fresh:
            logger.info("exporting %s at %dx%d to ONNX (once): %s", backbone.name, *input_size, path)
            export_onnx(backbone, input_size, path)
        session = onnx_session(path, threads)
    except Exception as exc:  # An exporter or runtime gap must not stop extraction: PyTorch still works.
        logger.warning("ONNX export of %s failed (%s); extracting features with PyTorch instead", backbone.name, exc)
        path.unlink(missing_ok=True)
        return None
    if fresh:
        # Inputs in the range that normalised posters have; pure noise is a harsher test than needed.
        check = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, *input_size)).astype(np.float32)
        difference = max_difference(session, backbone, check)
        if difference > PARITY_TOLERANCE:
            logger.warning(
                "the ONNX export of %s differs from PyTorch by %.2g (over %.0e); extracting with PyTorch instead",
                backbone.name,
                difference,
                PARITY_TOLERANCE,
            )
            path.unlink(missing_ok=True)
            return None
    return session


def export_backbone(
    backbone: str, preprocessing, weights=None, cache_dir: Path | None = None, pooled_stages: int | None = None
) -> Path:
    """The ONNX file of a registered backbone at ``preprocessing``'s input size (exported once, cached),
    its features pooled as ``pooled_stages`` says (default: the backbone's registered choice).

    This is the file that feature extraction runs; a run folder keeps a copy so that predicting
    needs neither torch nor the cache.
    """
    from postergenre.features.cache import cache_dir as default_cache_dir
    from postergenre.models.backbones import create_backbone

    model = create_backbone(backbone, weights=weights, pooled_stages=pooled_stages).eval()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = onnx_path(root, model, preprocessing.input_size, weights_digest(model))
    if onnx_backbone(root, model, preprocessing.input_size, weights_digest(model)) is None:
        raise PosterGenreError(f"{backbone} could not be exported to ONNX; see the warning above")
    return path
