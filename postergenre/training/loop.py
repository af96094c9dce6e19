"""The training loop that both modes share: AdamW on cached features, early stopping on
validation macro ROC-AUC, the best epoch restored.

Features are small (thousands of posters by ~1000 numbers), so everything lives in memory as
tensors and an epoch takes milliseconds; there is no data loader.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from postergenre.training.losses import masked_mean
from postergenre.training.optim import AdamW

logger = logging.getLogger(__name__)

# Seeds the dropout masks' generator beside the run's seed (any constant other than none).
DROPOUT_STREAM = 1
# Validation AUC must rise by more than this to count as an improvement for early stopping.
MIN_DELTA = 1e-4

# Heads may be built on several threads (train_concurrently); torch's global generator is shared.
_GLOBAL_RNG = threading.Lock()
# The name of the head a thread is training, for its epoch lines ("" when only one trains).
_HEAD_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("head_label", default="")


@dataclass
class TrainResult:
    """A trained head (best epoch restored) and its per-epoch history."""

    head: nn.Module
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    warnings: list[str] = field(default_factory=list)
    # An ensemble's: each backbone's own result, by member, whose best epochs a refit repeats.
    members: dict[str, TrainResult] | None = None


@dataclass
class FitSettings:
    epochs: int
    patience: int
    lr: float
    weight_decay: float
    batch_size: int
    seed: int
    threads: int | None = None
    # Matrix products of the training steps in bfloat16 (fp32 weights, losses and validation): see
    # :func:`native_bf16`.
    bf16: bool = False


def macro_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean ROC-AUC over the genres that have both positives and negatives; NaN if none has.

    The AUC is the Mann-Whitney statistic from average ranks (ties count a half, as in
    scikit-learn's ``roc_auc_score``), for all genres in one ranking: early stopping computes it
    every epoch, and one call per genre cost more than the epoch's training.
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true) > 0
    positives = y_true.sum(0)
    negatives = len(y_true) - positives
    usable = (positives > 0) & (negatives > 0)
    if not usable.any():
        return float("nan")
    ranks = rankdata(np.asarray(y_score, dtype=np.float64)[:, usable], axis=0)
    n_pos, n_neg = positives[usable], negatives[usable]
    rank_sums = (ranks * y_true[:, usable]).sum(0)
    return float(np.mean((rank_sums - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))


def balanced_accuracy(y_true: np.ndarray, logits: np.ndarray, cut: np.ndarray) -> float:
    """Mean over genres of (recall + specificity) / 2, predicting yes where ``logits >= cut``."""
    y_pred = logits >= cut
    positives, negatives = y_true.sum(0), (1 - y_true).sum(0)
    tpr = (y_pred & (y_true == 1)).sum(0) / np.maximum(positives, 1)
    tnr = (~y_pred & (y_true == 0)).sum(0) / np.maximum(negatives, 1)
    usable = (positives > 0) & (negatives > 0)
    return float(np.mean(((tpr + tnr) / 2)[usable])) if usable.any() else float("nan")


@torch.no_grad()
def predict_logits(
    head: nn.Module, features: np.ndarray | torch.Tensor, batch_size: int = 4096, *, standardised: bool = False
) -> np.ndarray:
    """The head's logits for (N, D) features, in evaluation mode (no dropout); ``standardised``: the
    features went through ``head.standardise`` already."""
    head.eval()
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    forward = head.forward_standardised if standardised else head
    return torch.cat([forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded for building a head, the caller's state restored after; one
    thread at a time, so that heads built side by side get the same weights as built alone."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def train_concurrently(jobs: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run independent trainings (e.g. the image and the text head) on threads, one per core, and
    return their results by name (see :class:`HeadPool`)."""
    if len(jobs) < 2:
        return {name: job() for name, job in jobs.items()}
    with HeadPool(len(jobs)) as pool:
        for name, job in jobs.items():
            pool.submit(name, job)
        return pool.results()


class HeadPool:
    """Trainings on threads, one per core, started as soon as each is submitted.

    Each keeps to one torch thread: on 2 cores the image and text heads then train in the time of
    the slower one, and single-threaded ops never spin against each other as two multi-threaded
    ones do. Training stays reproducible: each fit draws from generators of its own. A job may be
    submitted while the caller still prepares the next one's data (the text features, say).
    """

    def __init__(self, n_jobs: int):
        self.workers = max(1, min(n_jobs, os.cpu_count() or 1))
        self.futures: dict[str, object] = {}

    def __enter__(self) -> HeadPool:
        # The count is set here, once: fits restoring it on their own would race each other.
        self._threads = torch_threads(1)
        self._threads.__enter__()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="head")
        return self

    def submit(self, name: str, job: Callable[[], object]) -> None:
        def labelled() -> object:
            _HEAD_LABEL.set(name)
            torch.set_num_threads(1)  # OpenMP's thread count may be per thread: set it in each
            return job()

        self.futures[name] = self._pool.submit(labelled)

    def results(self) -> dict[str, object]:
        return {name: future.result() for name, future in self.futures.items()}

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=exc_info[0] is not None)
        self._threads.__exit__(*exc_info)


def fit(
    head: nn.Module,
    loss_fn: Callable,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    settings: FitSettings,
    *,
    sample_mask: Callable[[np.random.Generator], np.ndarray] | None = None,
    decision_cut: np.ndarray | None = None,
) -> TrainResult:
    """Train ``head`` in place and return it with the best validation epoch's weights.

    Args:
        head: a head whose standardisation is already set.
        loss_fn: per-element loss (N, G) from logits and targets.
        train, validation: (features (N, D), labels (N, G) 0/1); validation None trains every one
            of ``settings.epochs`` and keeps the last (no early stopping: a refit's epoch count was
            chosen before).
        settings: epochs, patience, learning rate, weight decay, batch size (0: full batch), seed.
        sample_mask: called once per epoch with the run's generator; gives a 0/1 (N, G) mask of
            which training labels count this epoch (rows with none are skipped).
        decision_cut: per-genre logit at or above which balanced accuracy says yes (default 0).
    """
    # Inside train_concurrently the thread count is already set, for all the heads at once.
    threads = None if _HEAD_LABEL.get() else settings.threads
    with torch_threads(threads), own_dropout_generator(head, settings.seed):
        return _fit(head, loss_fn, train, validation, settings, sample_mask, decision_cut)


@contextlib.contextmanager
def own_dropout_generator(head: nn.Module, seed: int) -> Iterator[None]:
    """The head's dropout masks drawn from a generator of this fit's, not torch's shared one."""
    from postergenre.training.heads import ByteDropout

    layers = [module for module in head.modules() if isinstance(module, ByteDropout)]
    # A stream of its own: the fit's shuffling generator starts from the same seed.
    generator = np.random.default_rng([seed, DROPOUT_STREAM])
    for layer in layers:
        layer.generator = generator
    try:
        yield
    finally:
        for layer in layers:
            layer.generator = None


def _fit(head, loss_fn, train, validation, settings, sample_mask, decision_cut) -> TrainResult:
    rng = np.random.default_rng(settings.seed)
    # Standardised once here; each step then calls forward_standardised.
    with torch.no_grad():
        x_train = head.standardise(torch.as_tensor(np.asarray(train[0], dtype=np.float32)))
        x_val = (
            None
            if validation is None
            else head.standardise(torch.as_tensor(np.asarray(validation[0], dtype=np.float32)))
        )
    y_train = torch.as_tensor(np.asarray(train[1], dtype=np.float32))
    cut = np.zeros(y_train.shape[1]) if decision_cut is None else np.asarray(decision_cut)
    optimizer = AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    stopper = EarlyStopping(head, settings.patience)
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        mask = None if sample_mask is None else torch.as_tensor(sample_mask(rng), dtype=torch.float32)
        loss = train_one_epoch(
            head, loss_fn, optimizer, x_train, y_train, mask, settings.batch_size, rng, bf16=settings.bf16
        )
        if validation is None:  # a refit (postergenre.training.refit): every epoch runs, the last is kept
            stopper.history.append({"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start})
            continue
        logits = predict_logits(head, x_val, standardised=True)
        row = epoch_row(epoch, loss, np.asarray(validation[1]), logits, cut, start)
        log_epoch(row, settings.epochs)
        if stopper.step(row):
            break

    history = stopper.history
    if validation is None:
        head.eval()
        return TrainResult(head, history, len(history), stopped_early=False)
    best_epoch = stopper.restore_best()
    head.eval()
    return TrainResult(
        head, history, best_epoch, len(history) < settings.epochs, stopping_warnings(history, best_epoch)
    )


def epoch_row(epoch: int, loss: float, y_val: np.ndarray, logits: np.ndarray, cut: np.ndarray, start: float) -> dict:
    """One row of ``history.csv``: the epoch's training loss and its validation figures."""
    return {
        "epoch": epoch,
        "loss": loss,
        "val_macro_auc": macro_auc(y_val, logits),
        "val_balanced_accuracy": balanced_accuracy(y_val, logits, cut),
        "seconds": time.perf_counter() - start,
    }


class EarlyStopping:
    """Keeps the epochs' history and the weights of the best validation macro AUC so far, and says
    when ``patience`` epochs have passed without a gain of at least ``MIN_DELTA``."""

    def __init__(self, module: nn.Module, patience: int):
        self.module, self.patience = module, patience
        self.history: list[dict] = []
        self.best_auc, self.best_epoch = -np.inf, 0
        self.best_state = copy.deepcopy(module.state_dict())

    def step(self, row: dict) -> bool:
        """Record an epoch's row; True when training should stop."""
        self.history.append(row)
        auc, epoch = row["val_macro_auc"], row["epoch"]
        # Without a usable validation AUC there is nothing to stop on: keep the latest epoch.
        if not np.isfinite(auc) or auc > self.best_auc + MIN_DELTA:
            self.best_auc = auc if np.isfinite(auc) else -np.inf
            self.best_epoch, self.best_state = epoch, copy.deepcopy(self.module.state_dict())
            return False
        return epoch - self.best_epoch >= self.patience

    def restore_best(self) -> int:
        """Load the best epoch's weights back into the module; returns that epoch."""
        self.module.load_state_dict(self.best_state)
        return self.best_epoch


def train_one_epoch(head, loss_fn, optimizer, x, y, mask, batch_size, rng, *, bf16: bool = False) -> float:
    """One pass over the (masked) training rows in shuffled mini-batches; the mean batch loss.
    ``bf16``: each forward pass under bfloat16 autocast (a context per step, as autocast's weight
    cache must not outlive the step that updates the weights)."""
    head.train()
    rows = np.arange(len(x)) if mask is None else np.flatnonzero(mask.sum(1).numpy() > 0)
    rows = rng.permutation(rows)
    step = len(rows) if batch_size <= 0 else batch_size
    losses = []
    for start in range(0, len(rows), step):
        batch = torch.as_tensor(rows[start : start + step])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = head.forward_standardised(x[batch])
        loss = masked_mean(loss_fn(logits.float(), y[batch]), None if mask is None else mask[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def log_epoch(row: dict, epochs: int) -> None:
    label = _HEAD_LABEL.get()
    logger.info(
        "%sepoch %3d/%d  loss %.4f  val_auc %.4f  val_bacc %.4f  %.2fs",
        f"{label} head  " if label else "",
        row["epoch"],
        epochs,
        row["loss"],
        row["val_macro_auc"],
        row["val_balanced_accuracy"],
        row["seconds"],
    )


def stopping_warnings(history: list[dict], best_epoch: int) -> list[str]:
    """Warnings when the kept epoch may mislead: no validation AUC, or the epoch limit cut training short."""
    last = history[-1]
    if not np.isfinite(last["val_macro_auc"]):
        message = (
            "no genre has both positives and negatives in validation, so early stopping was off and the last "
            "epoch is kept; use a larger dataset"
        )
    elif best_epoch == last["epoch"] and len(history) > 1:
        message = (
            f"training stopped on its epoch limit ({last['epoch']}) while validation AUC was still improving; "
            "raise --epochs"
        )
    else:
        return []
    logger.warning(message)
    return [message]


def settings_from(config) -> FitSettings:
    """The loop's settings from a :class:`~postergenre.training.config.TrainConfig`."""
    return FitSettings(
        config.epochs,
        config.patience,
        config.learning_rate,
        config.weight_decay,
        config.batch_size,
        config.seed,
        config.threads,
        uses_bf16(config.precision),
    )


def uses_bf16(precision: str) -> bool:
    """Whether head training runs in bfloat16 under a ``precision`` setting, on this machine."""
    return precision == "bf16" or (precision == "auto" and native_bf16())


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX).

    A head's steps are matrix products of ~5k posters by ~2k features, bound by arithmetic: in
    bfloat16 an epoch of the default image head (4,635 posters, 1,904 features, validation included)
    took 0.093 s against 0.155 s in fp32 on an AMD EPYC with AVX512-BF16, the text head's (385
    features) 0.030 s against 0.096 s, and the heads' validation figures stayed within seed noise
    (postergenre.training.config).
    Without native support bfloat16 is emulated and slower, so ``precision="auto"`` keeps fp32 there.
    """
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private helpers: absent from another torch, fp32 is safe
        return False


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with this many torch threads (None: leave torch's choice), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_prevalence(y: np.ndarray) -> np.ndarray:
    """Each genre's positive fraction in (N, G) labels, kept off 0 and 1 so that its log-odds stay finite.

    A genre with no training positive gets half a positive's worth: the log-odds are then very
    negative but finite.
    """
    y = np.asarray(y, dtype=np.float64)
    n = max(len(y), 1)
    return np.clip(y.sum(0) / n, 0.5 / n, 1 - 0.5 / n)


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))
