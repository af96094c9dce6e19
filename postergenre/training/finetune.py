"""Fine-tuning the last K stages of a pretrained backbone together with the head, on a CPU.

The stages before the K trained ones (the prefix) stay frozen, so what enters the first trained
stage never changes: those activation maps are computed once per poster and cached (float16,
content-keyed, like pooled features; see :mod:`postergenre.features.activations`). An epoch then
runs only the tail (the K stages and global average pooling) and the head, which for K=1 or 2 on
EfficientNet-Lite0 costs a few percent of a full forward pass.

The steps of :func:`train_fine_tuned`:

1. cache the activations entering the tail (a second run with the same posters, backbone,
   weights, preprocessing and K reads them back);
2. warm-start the head on the tail's pretrained pooled features, exactly as the feature path
   trains a head (standardisation, output bias, early stopping);
3. train tail and head together: AdamW with the tail at ``TAIL_LR_SCALE`` times the head's learning
   rate, batch norm of the tail in eval mode (its ImageNet running statistics kept: ~4.6k posters
   would only make them noisier), each activation map mirrored at random, early stopping on
   validation macro AUC counted from the warm-started head's, so that a tail that never helps is
   left as it was;
4. the pooled features of every poster through the tuned tail: thresholds, saving and evaluation
   are then the feature path's, and the whole tuned backbone is saved (``backbone.safetensors``,
   ``backbone.onnx``) so that predict, serve, evaluate and explain use it unchanged.

Measured on the shared dataset (benchmarks/fine_tune.py; lite0 256x160 stretched, 256-wide MLP
head, lr 3e-4, image only, the standard split; 2 cores):

    run     val AUC  val AP   test AUC  test AP   caching  training
    K=0     0.778    0.320    0.748     0.281     (cached)  12 s
    K=1     0.778    0.319    0.748     0.281     99 s      90 s (7 s an epoch on the cache)

With the defaults the tuned last stage never beat the head alone on validation (10 epochs, the
patience, after the warm start), so the run kept the pretrained backbone: on ~4.6k posters, tuning buys nothing
measurable here. TODO: try a larger tail learning rate or K=2 before calling it settled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from postergenre.training.images import BACKBONE_WEIGHTS, ImageTrainResult
from postergenre.training.loop import (
    EarlyStopping,
    epoch_row,
    log_epoch,
    log_odds,
    stopping_warnings,
    train_prevalence,
)

logger = logging.getLogger(__name__)

# The tail's learning rate relative to the head's: pretrained filters should move less than a head
# that starts from the warm start's optimum of a different problem.
TAIL_LR_SCALE = 0.1
# Full-batch steps (batch size 0) over thousands of activation maps would hold every map's graph at once.
DEFAULT_TAIL_BATCH = 256
EVAL_BATCH = 512
# Of the median feature std: the least a feature's std may be in the head's standardisation while the tail trains.
STD_FLOOR = 0.1


@dataclass
class Activations:
    """Cached activation maps by poster: ``values`` is (N, C*h*w) float16, read-only, maybe a memory map."""

    ids: list[str]
    values: np.ndarray
    map_shape: tuple[int, int, int]
    spec: dict

    def rows(self, ids) -> np.ndarray:
        row = {id_: k for k, id_ in enumerate(self.ids)}
        return np.asarray([row[i] for i in ids], dtype=np.int64)

    def maps(self, rows: np.ndarray) -> torch.Tensor:
        """The maps of these rows as a float32 (n, C, h, w) tensor."""
        values = np.asarray(self.values[rows], dtype=np.float32)
        return torch.from_numpy(values).reshape(len(rows), *self.map_shape)


class Tail(nn.Module):
    """The last stages of a backbone and global average pooling: activation maps to pooled features.

    The stages are the backbone's own modules, so training them here changes the backbone. Batch norm
    stays in eval mode even in training mode.
    """

    def __init__(self, stages: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3))

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


class TailWithHead(nn.Module):
    def __init__(self, tail: Tail, head: nn.Module):
        super().__init__()
        self.tail, self.head = tail, head

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(maps))


def train_fine_tuned(dataset, config, preprocessing, split, genres, *, skip_missing: bool, progress: bool):
    """Fine-tune the backbone's last ``config.fine_tune`` stages with the head on the train split.

    Returns (Features of every poster through the tuned backbone, an ImageTrainResult whose
    ``backbone`` is the whole tuned backbone).
    """
    from postergenre.data.dataset import drop_images
    from postergenre.features.activations import cut_index
    from postergenre.models.backbones import create_backbone
    from postergenre.training.run import Features

    # The tail's own last stage is pooled: stages before the cut are cached maps, not features.
    backbone = create_backbone(config.backbone, weights=config.weights, pooled_stages=0).eval()
    cut = cut_index(backbone, config.fine_tune)
    start = time.perf_counter()
    activations, failed = cache_activations(dataset, config, preprocessing, cut, progress)
    drop_images(dataset, failed, skip=skip_missing)
    caching_seconds = time.perf_counter() - start

    tail = Tail([module for _, module in backbone.stages()[cut:]])
    labels = dataset.labels[genres]
    sides, have = {}, set(activations.ids)
    for side in ("train", "validation"):
        ids = [i for i in split.index[split["split"] == side] if i in have]
        sides[side] = (activations.rows(ids), labels.loc[ids].to_numpy(dtype=np.int8))
    start = time.perf_counter()
    result = fit_tail(tail, config, activations, sides["train"], sides["validation"], progress=progress)
    result.backbone = backbone.eval()
    logger.info(
        "fine-tuned the last %d stages: activations %.1f s, training %.1f s",
        config.fine_tune,
        caching_seconds,
        time.perf_counter() - start,
    )

    features = pooled_features(tail, activations, np.arange(len(activations.ids)))
    spec = {
        "backbone": config.backbone,
        "weights": BACKBONE_WEIGHTS,
        "input_size": list(preprocessing.input_size),
        "fine_tune": config.fine_tune,
        "activations": activations.spec,
    }
    return Features(list(activations.ids), features, spec), result


def cache_activations(dataset, config, preprocessing, cut: int, progress: bool) -> tuple[Activations, dict]:
    """The activation maps entering stage ``cut`` for every poster (from the cache where it has them)."""
    from postergenre.features import extract_features

    found = extract_features(
        {i: dataset.image_paths[i] for i in dataset.ids},
        config.backbone,
        preprocessing=preprocessing,
        batch_size=config.feature_batch_size,
        progress=progress,
        weights=config.weights,
        cut=cut,
    )
    spec = {k: found.spec[k] for k in ("cut", "map_shape", "weights", "n_cached", "n_computed", "cache", "engine")}
    return Activations(list(found.ids), found.values, tuple(found.spec["map_shape"]), spec), dict(found.failed)


@torch.no_grad()
def pooled_features(tail: Tail, activations: Activations, rows: np.ndarray) -> np.ndarray:
    """The tail's pooled (n, num_features) features of these rows, in eval mode."""
    tail.eval()
    parts = [tail(activations.maps(rows[i : i + EVAL_BATCH])).numpy() for i in range(0, len(rows), EVAL_BATCH)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def warm_start(tail: Tail, config, activations: Activations, train, validation):
    """The head trained alone on the tail's pretrained pooled features, as the feature path trains it."""
    from postergenre.training.multilabel import train_multilabel
    from postergenre.training.per_genre import train_per_genre

    (train_rows, y_train), (val_rows, y_val) = train, validation
    x_train = pooled_features(tail, activations, train_rows)
    x_val = pooled_features(tail, activations, val_rows)
    trainer = train_per_genre if config.mode == "per-genre" else train_multilabel
    logger.info("warm start: a %s %s head on the pretrained tail's features", config.mode, config.head_type)
    result = trainer((x_train, y_train), (x_val, y_val), config)
    floor_feature_std(result.head)
    return result


@torch.no_grad()
def floor_feature_std(head: nn.Module) -> None:
    """Raise the head's feature std to a floor. A feature (nearly) constant on the pretrained tail's
    training posters has a std near 0; once the tail moves, dividing by it turns a tiny change into a
    huge logit (we saw the loss jump from 0.5 to 160). For the warm-started head nothing changes:
    such a feature minus its mean was (nearly) 0 in training anyway."""
    std = head.feature_std
    std.clamp_(min=float(std.median()) * STD_FLOOR)


def fit_tail(tail: Tail, config, activations: Activations, train, validation, *, progress: bool = True):
    """Warm-start the head, then train tail and head together; the best validation epoch is kept.

    ``train`` and ``validation`` are (rows of ``activations``, labels (N, G) 0/1). The history holds
    the warm start's epochs, then the joint ones, numbered on.
    """
    from postergenre.training.losses import create_loss
    from postergenre.training.per_genre import balanced_sample_mask

    (_, y_train), (val_rows, y_val) = train, validation
    warm = warm_start(tail, config, activations, train, validation)
    per_genre = config.mode == "per-genre"
    model = TailWithHead(tail, warm.head)
    if per_genre:
        # A balanced per-genre head learns at 50/50; its prior correction is added back after training.
        model.head.logit_offset.zero_()
    cut = np.zeros(y_train.shape[1]) if per_genre else log_odds(train_prevalence(y_train))
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        loss_fn = create_loss(config.loss, gamma_neg=config.gamma_neg, gamma_pos=config.gamma_pos, clip=config.clip)
        optimizer = torch.optim.AdamW(
            [
                {"params": list(tail.parameters()), "lr": config.learning_rate * TAIL_LR_SCALE},
                {"params": list(model.head.parameters()), "lr": config.learning_rate},
            ],
            weight_decay=config.weight_decay,
        )
        stopper = warm_stopper(model, warm, config.patience)
        first = len(warm.history) + 1
        logger.info("fine-tuning %d stages with the head from epoch %d", len(tail.blocks), first)
        for epoch in range(first, first + config.epochs):
            start = time.perf_counter()
            mask = balanced_sample_mask(y_train, rng) if per_genre else None
            loss = train_one_epoch(model, loss_fn, optimizer, activations, train, mask, config, rng, progress)
            logits = predict_tail_logits(model, activations, val_rows)
            row = epoch_row(epoch, loss, y_val, logits, cut, start)
            log_epoch(row, first + config.epochs - 1)
            if stopper.step(row):
                break
    last = first + config.epochs - 1
    return finished(model, stopper, warm, (first, last), y_train if per_genre else None)


def warm_stopper(model: TailWithHead, warm, patience: int) -> EarlyStopping:
    """Early stopping that starts from the warm start: its history, and its validation AUC as the one to beat."""
    stopper = EarlyStopping(model, patience)
    stopper.history = list(warm.history)
    auc = warm.history[warm.best_epoch - 1]["val_macro_auc"]
    # Counted from the warm start's last epoch, so that the joint phase gets its full patience.
    stopper.best_auc, stopper.best_epoch = (auc if np.isfinite(auc) else -np.inf), len(warm.history)
    return stopper


def finished(model: TailWithHead, stopper: EarlyStopping, warm, epochs: tuple[int, int], y_per_genre):
    """The best epoch restored (the warm start's if no joint epoch beat it), with warnings where it may mislead.

    ``epochs``: the joint phase's first and last allowed epoch; ``y_per_genre``: the training labels of a
    per-genre head, whose prior correction goes back into its logit offset.
    """
    from postergenre.training.per_genre import prior_correction

    first, last = epochs
    history, best_epoch = stopper.history, stopper.restore_best()
    model.eval()
    warnings = []
    if best_epoch < first:
        best_epoch = warm.best_epoch
        warnings.append(
            "fine-tuning never beat the head alone on validation, so the backbone is kept as it was; "
            "a frozen backbone (--fine-tune 0) gives the same model faster"
        )
        logger.warning(warnings[-1])
    if y_per_genre is not None:
        model.head.logit_offset.copy_(torch.from_numpy(prior_correction(y_per_genre)))
    stopped_early = history[-1]["epoch"] < last
    warnings += stopping_warnings(history, best_epoch)
    return ImageTrainResult(model.head, history, best_epoch, stopped_early, warnings)


def train_one_epoch(model, loss_fn, optimizer, activations, train, mask, config, rng, progress) -> float:
    """One shuffled pass over the training maps ``train`` (rows, labels), each mirrored at random; the mean
    batch loss. ``mask`` (N, G) 0/1, for a per-genre head, says which labels count this epoch."""
    from tqdm import tqdm

    from postergenre.training.losses import masked_mean

    rows, labels = train
    model.train()
    order = np.arange(len(rows)) if mask is None else np.flatnonzero(mask.sum(1) > 0)
    order = rng.permutation(order)
    step = config.batch_size if config.batch_size > 0 else DEFAULT_TAIL_BATCH
    y = torch.as_tensor(labels, dtype=torch.float32)
    weights = None if mask is None else torch.as_tensor(mask, dtype=torch.float32)
    losses = []
    for start in tqdm(range(0, len(order), step), desc="fine-tuning", unit="batch", leave=False, disable=not progress):
        batch = order[start : start + step]
        maps = activations.maps(rows[batch])
        mirrored = torch.from_numpy(rng.random(len(batch)) < 0.5)
        maps = torch.where(mirrored[:, None, None, None], maps.flip(-1), maps)
        loss = masked_mean(loss_fn(model(maps), y[batch]), None if weights is None else weights[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def predict_tail_logits(model: TailWithHead, activations: Activations, rows: np.ndarray) -> np.ndarray:
    model.eval()
    parts = [model(activations.maps(rows[i : i + EVAL_BATCH])) for i in range(0, len(rows), EVAL_BATCH)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)
