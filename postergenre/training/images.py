"""Training a backbone end to end on the posters themselves (the custom CNN, from scratch).

The feature path trains a head on cached features of a frozen backbone; here the backbone learns
too, so features change every step and nothing can be cached but the decoded pixels. Every poster
is decoded once, resized to the input size and kept in memory as uint8 (7242 posters at 300x300
take 1.9 GB; pass a smaller --input-size for speed). Each epoch augments (optional), normalises
and feeds mini-batches; early stopping and the history rows are those of the feature path.

After training, the trained backbone's features of every poster go through the same steps as the
feature path (thresholds, saving, evaluation), so the run folder is the same: the head in
``model.safetensors``, the trained backbone in ``backbone.safetensors`` and ``backbone.onnx``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from postergenre.training.loop import (
    EarlyStopping,
    TrainResult,
    epoch_row,
    log_epoch,
    log_odds,
    stopping_warnings,
    train_prevalence,
)

logger = logging.getLogger(__name__)

BACKBONE_WEIGHTS = "backbone.safetensors"
# Full-batch training (batch size 0) of a CNN on thousands of images does not fit in memory.
DEFAULT_IMAGE_BATCH = 64
EVAL_BATCH = 128


@dataclass
class ImageSet:
    """Decoded posters at the input size: ids and uint8 (N, h, w, 3) pixels."""

    ids: list[str]
    pixels: np.ndarray

    def take(self, ids) -> np.ndarray:
        row = {id_: k for k, id_ in enumerate(self.ids)}
        return self.pixels[[row[i] for i in ids]]


@dataclass
class ImageTrainResult(TrainResult):
    backbone: nn.Module | None = None


class BackboneWithHead(nn.Module):
    """Pixels to logits: the backbone's pooled features through the head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def load_images(image_paths: dict, preprocessing, *, progress: bool = True) -> tuple[ImageSet, dict[str, str]]:
    """Decode and resize every poster once; returns the images and {id: reason} for those that failed."""
    from tqdm import tqdm

    from postergenre.data.images import ImageError, open_rgb

    height, width = preprocessing.input_size
    # Filled in place: stacking a list would hold every poster twice at the peak (GBs on the full set).
    pixels = np.empty((len(image_paths), height, width, 3), np.uint8)
    ids, failed = [], {}
    for id_, path in tqdm(image_paths.items(), desc="decoding posters", unit="img", disable=not progress):
        try:
            pixels[len(ids)] = np.asarray(preprocessing.resize_image(open_rgb(path)), dtype=np.uint8)
        except ImageError as exc:
            failed[id_] = str(exc)
            continue
        ids.append(id_)
    return ImageSet(ids, pixels[: len(ids)]), failed


def train_on_images(dataset, config, preprocessing, split, genres, *, skip_missing: bool, progress: bool):
    """Train backbone and head on the train split's posters; returns (Features of every poster, result).

    The features are the trained backbone's (eval mode), so thresholds and evaluation run on them
    exactly as on a frozen backbone's.
    """
    from postergenre.data.dataset import drop_images
    from postergenre.training.run import Features

    images, failed = load_images({i: dataset.image_paths[i] for i in dataset.ids}, preprocessing, progress=progress)
    drop_images(dataset, failed, skip=skip_missing)
    labels = dataset.labels[genres]
    sides, have = {}, set(images.ids)
    for side in ("train", "validation"):
        ids = [i for i in split.index[split["split"] == side] if i in have]
        sides[side] = (images.take(ids), labels.loc[ids].to_numpy(dtype=np.int8))
    result = fit_images(config, preprocessing, sides["train"], sides["validation"], progress=progress)
    features = backbone_features(result.backbone, preprocessing, images.pixels)
    spec = {"backbone": config.backbone, "weights": BACKBONE_WEIGHTS, "input_size": list(preprocessing.input_size)}
    return Features(list(images.ids), features, spec), result


def build_model(config, num_genres: int, prevalence: np.ndarray) -> BackboneWithHead:
    from postergenre.models.backbones import create_backbone
    from postergenre.training.heads import create_head

    backbone = create_backbone(config.backbone, pretrained=False)
    head = create_head(
        config.head_type, backbone.num_features, num_genres, hidden=config.hidden_size, dropout=config.dropout_rate
    )
    # The head's standardisation stays the identity: features of a network still learning have no fixed spread.
    head.init_output_bias(log_odds(prevalence))
    return BackboneWithHead(backbone, head)


def fit_images(config, preprocessing, train, validation, *, progress: bool = True) -> ImageTrainResult:
    """Train end to end with BCE and AdamW, stopping early on validation macro AUC; best epoch restored."""
    from postergenre.training.losses import create_loss

    # config.threads (1 by default) is for heads on features; a CNN needs every core torch gives it.
    (x_train, y_train), (x_val, y_val) = train, validation
    rng = np.random.default_rng(config.seed)
    prevalence = train_prevalence(y_train)
    cut = log_odds(prevalence)
    # fork_rng: seeding here must not change the caller's torch random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config, y_train.shape[1], prevalence)
        loss_fn = create_loss(config.loss, gamma_neg=config.gamma_neg, gamma_pos=config.gamma_pos, clip=config.clip)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        stopper = EarlyStopping(model, config.patience)
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            loss = train_one_epoch(model, loss_fn, optimizer, x_train, y_train, config, preprocessing, rng, progress)
            logits = predict_image_logits(model, preprocessing, x_val)
            row = epoch_row(epoch, loss, y_val, logits, cut, start)
            log_epoch(row, config.epochs)
            if stopper.step(row):
                break
    history, best_epoch = stopper.history, stopper.restore_best()
    model.eval()
    stopped_early = len(history) < config.epochs
    warnings = stopping_warnings(history, best_epoch)
    return ImageTrainResult(model.head, history, best_epoch, stopped_early, warnings, backbone=model.backbone)


def train_one_epoch(model, loss_fn, optimizer, pixels, labels, config, preprocessing, rng, progress) -> float:
    """One shuffled pass over the training posters (augmented if the config says so); the mean batch loss."""
    from tqdm import tqdm

    from postergenre.training.augment import augment_batch

    model.train()
    rows = rng.permutation(len(pixels))
    step = config.batch_size if config.batch_size > 0 else DEFAULT_IMAGE_BATCH
    y = torch.as_tensor(labels, dtype=torch.float32)
    losses = []
    for start in tqdm(range(0, len(rows), step), desc="training", unit="batch", leave=False, disable=not progress):
        batch = rows[start : start + step]
        images = augment_batch(pixels[batch], rng) if config.augment else pixels[batch]
        logits = model(torch.from_numpy(preprocessing.normalize(images)))
        loss = loss_fn(logits, y[batch]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def predict_image_logits(model: nn.Module, preprocessing, pixels: np.ndarray) -> np.ndarray:
    model.eval()
    parts = [
        model(torch.from_numpy(preprocessing.normalize(pixels[i : i + EVAL_BATCH])))
        for i in range(0, len(pixels), EVAL_BATCH)
    ]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


@torch.no_grad()
def backbone_features(backbone: nn.Module, preprocessing, pixels: np.ndarray) -> np.ndarray:
    """The pooled (N, num_features) features of uint8 NHWC pixels, in eval mode."""
    backbone.eval()
    parts = [
        backbone(torch.from_numpy(preprocessing.normalize(pixels[i : i + EVAL_BATCH]))).numpy()
        for i in range(0, len(pixels), EVAL_BATCH)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def run_folder_features(run_dir, image_paths: dict, *, progress: bool = True):
    """Features of these posters ({id: path}) from the run folder's own ``backbone.onnx``.

    Unreadable posters are logged and left out."""
    from tqdm import tqdm

    from postergenre.data.images import ImageError, open_rgb
    from postergenre.inference.predictor import Predictor
    from postergenre.training.run import Features

    predictor = Predictor.load(run_dir)
    ids, arrays = [], []
    for id_, path in tqdm(image_paths.items(), desc="features (run backbone)", unit="img", disable=not progress):
        try:
            arrays.append(predictor.preprocessing(open_rgb(path)))
        except ImageError as exc:
            logger.warning("skipped %s: %s", id_, exc)
            continue
        ids.append(id_)
    values = [predictor.features(np.stack(arrays[i : i + EVAL_BATCH])) for i in range(0, len(arrays), EVAL_BATCH)]
    values = np.concatenate(values).astype(np.float32) if values else np.zeros((0, 0), np.float32)
    return Features(ids, values, {"backbone": predictor.model.info["backbone"], "weights": BACKBONE_WEIGHTS})


def save_trained_backbone(run_dir, backbone: nn.Module, input_size: tuple[int, int]) -> None:
    """The trained backbone as ``backbone.safetensors`` (for explain) and ``backbone.onnx`` (for predict, evaluate)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from postergenre.features.onnx_export import export_onnx
    from postergenre.inference.predictor import BACKBONE_ONNX

    run_dir = Path(run_dir)
    save_file({k: v.detach().contiguous() for k, v in backbone.state_dict().items()}, str(run_dir / BACKBONE_WEIGHTS))
    target = run_dir / BACKBONE_ONNX
    target.unlink(missing_ok=True)
    export_onnx(exportable(backbone, tuple(input_size)), tuple(input_size), target)


class MatmulAdaptivePool(nn.Module):
    """``nn.AdaptiveAvgPool2d`` from a fixed input grid written as two matrix products, which ONNX can
    export for any pair of sizes (its own exporter refuses an output size that is not a factor)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", pooling_matrix(in_size[0], out_size[0]))
        self.register_buffer("cols", pooling_matrix(in_size[1], out_size[1]).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols


def pooling_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of adaptive average pooling along one axis: output i averages
    inputs floor(i * n_in / n_out) up to ceil((i + 1) * n_in / n_out), as PyTorch does."""
    matrix = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        matrix[i, start:end] = 1 / (end - start)
    return matrix


def exportable(backbone: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """The backbone itself, or a copy whose adaptive pools (the custom CNN's, to its 300x300 grid)
    are matrix products at this input size, so that any input size exports to ONNX."""
    pools = [(name, m) for name, m in backbone.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        return backbone
    copied = copy.deepcopy(backbone).eval()
    for name, pool in pools:
        in_size = pool_input_size(copied, name, input_size)
        out_size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
        parent_name, _, child = name.rpartition(".")
        setattr(copied.get_submodule(parent_name), child, MatmulAdaptivePool(in_size, tuple(out_size)))
    return copied


@torch.no_grad()
def pool_input_size(backbone: nn.Module, name: str, input_size: tuple[int, int]) -> tuple[int, int]:
    """The spatial size of the maps that reach module ``name`` for an input of ``input_size``."""
    seen = {}
    handle = backbone.get_submodule(name).register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    try:
        backbone.eval()(torch.zeros(1, 3, *input_size))
    finally:
        handle.remove()
    return tuple(seen["x"].shape[-2:])
