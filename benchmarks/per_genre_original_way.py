"""Per-genre models the original way (the backbone on every poster, every epoch) against cached features.

Usage:
    python benchmarks/per_genre_original_way.py [DATA] [--n 300] [--genres Drama Comedy Action]
        [--epochs 3] [--lr 1e-3] [--batch-size 32] [--seed 0] [--threads 1]

The original work trained one balanced yes/no model per genre on top of a frozen pretrained CNN:
every epoch it reloaded the posters through a generator and ran the CNN on each one again, once per
genre. postergenre extracts pooled features once (ONNX Runtime, cached on disk) and trains the
per-genre heads on them (``train_per_genre``). Both ways here train on the same subset, split,
backbone, preprocessing (a train run's default, ``resolve_preprocessing(TrainConfig())``), linear
head, loss, optimiser (AdamW), batch size, epoch count and balanced sampling (``balanced_sample_mask``,
all positives and as many negatives, redrawn every epoch), and are scored on the same test posters.

What each way's seconds include:

- original: ``setup`` is one no-grad pass over the training posters for the head's feature mean and
  std (postergenre's heads standardise their input; the original's Keras head did not, so this pass is
  ours, and is printed apart). ``train`` is, per genre and epoch, decoding the balanced sample
  (``load_input``, in the loop, no prefetch thread), the PyTorch forward with autograd on, and the
  head's backward and AdamW step. The backbone is frozen (``requires_grad_(False)``) and in eval mode,
  as Keras runs a frozen base: its output needs no gradient, so backward stops at the head, as it does
  in TensorFlow. ``test`` decodes the test posters and runs the backbone on them ONCE for all genres
  (the original's separate models would run it once per genre; leaving that out only narrows the gap).
- cached: ``setup`` is the ONNX export (once per backbone and machine) and the extraction of every
  poster of the subset into an empty temporary cache; ``train`` is ``train_per_genre`` on the cached
  features; ``test`` is scoring the cached test features.

Not included in either: loading the CSV, building the backbone (the cached way's extraction builds its
own again, and that is counted), and the run folder, thresholds and report of a real ``postergenre
train``. The cached way runs first, so the original way reads the posters from a warm page cache (again
in its favour). The split is ``make_split`` (seed, stratified on the chosen genres) with its validation
side joined to training, since nothing is chosen on validation at a fixed epoch count;
``train_per_genre`` is handed the training side as its validation, whose AUC normally rises every epoch,
so that it keeps the last epoch as the original way does (the script says so if it did not).

Prints a progress line per genre and epoch of the original way, then one table: each way's seconds,
test ROC-AUC per genre and macro; the ratio of the ways' times; and the AUC gap. Both ways see the same
frozen features (ONNX Runtime and PyTorch agree within 1e-4), so at identical epochs their AUCs should
be close: what gap remains comes from the sampling draws, head initialisation, dropout and batching
(the cached way trains all genres in one layer, each on its own sample), not from the features.
No target. Timings on the shared, loaded 2-core machine are noisy. Skips with a message where the
shared dataset is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postergenre.data.dataset import load_dataset  # noqa: E402
from postergenre.data.splits import make_split  # noqa: E402
from postergenre.evaluation.metrics import roc_auc  # noqa: E402
from postergenre.features import extract_features, load_input  # noqa: E402
from postergenre.features.onnx_export import onnx_backbone, weights_digest  # noqa: E402
from postergenre.models.backbones import create_backbone  # noqa: E402
from postergenre.training.config import TrainConfig, resolve_preprocessing  # noqa: E402
from postergenre.training.heads import create_head  # noqa: E402
from postergenre.training.loop import predict_logits, torch_threads  # noqa: E402
from postergenre.training.losses import create_loss  # noqa: E402
from postergenre.training.per_genre import balanced_sample_mask, prior_correction, train_per_genre  # noqa: E402

logger = logging.getLogger("per_genre_original_way")

DEFAULT_GENRES = ("Drama", "Comedy", "Action")  # the three most frequent in the shared dataset
# Below this many test positives (or negatives) a genre's AUC is too noisy to compare.
MIN_TEST_POSITIVES = 10
# Eager PyTorch forward, batch 32 at 224x160 on the 2 shared cores: 16-19 posters/s on 1 thread, 9-10 on 2
# (load average 3); the default gives the original way its faster setting. ONNX Runtime uses all cores.
DEFAULT_THREADS = 1


def shared_dataset() -> Path:
    default = ROOT.parent / "shared" / "datasets" / "movie-posters"
    return Path(os.environ.get("POSTERGENRE_SHARED_DATASET", default)).resolve()


@dataclass
class Subset:
    """The posters both ways train and test on: files, and 0/1 labels (n_samples, n_genres) per side."""

    genres: list[str]
    train_paths: list[Path]
    test_paths: list[Path]
    train_ids: list[str]
    test_ids: list[str]
    y_train: np.ndarray
    y_test: np.ndarray


@dataclass
class WayResult:
    """One way's seconds by step (``setup``, ``train``, ``test``, ``total``, and more) and test AUCs."""

    seconds: dict[str, float]
    auc: dict[str, float]  # per genre, and "macro"


def load_subset(data: Path, n: int, genres: list[str], seed: int) -> Subset:
    """``n`` labelled posters spread evenly over the CSV's order, split (stratified on ``genres``) in two."""
    dataset = load_dataset(data)
    unknown = [g for g in genres if g not in dataset.genres]
    if unknown:
        raise ValueError(f"unknown genre(s) {', '.join(unknown)}; expected some of {', '.join(dataset.genres)}")
    if not 10 <= n <= len(dataset.ids):
        raise ValueError(f"--n must be between 10 and {len(dataset.ids)} (the labelled posters), got {n}")
    ids = [dataset.ids[k] for k in np.linspace(0, len(dataset.ids) - 1, n).round().astype(int)]
    labels = dataset.labels.loc[ids, genres]
    side = make_split(labels, seed=seed)["split"]
    train_ids, test_ids = list(side.index[side != "test"]), list(side.index[side == "test"])
    return Subset(
        genres=list(genres),
        train_paths=[dataset.image_paths[i] for i in train_ids],
        test_paths=[dataset.image_paths[i] for i in test_ids],
        train_ids=train_ids,
        test_ids=test_ids,
        y_train=labels.loc[train_ids].to_numpy(np.int8),
        y_test=labels.loc[test_ids].to_numpy(np.int8),
    )


def benchmark_config(epochs: int, lr: float, batch_size: int, seed: int) -> TrainConfig:
    """Per-genre linear heads for exactly ``epochs`` epochs (patience never ends them early)."""
    return TrainConfig(
        mode="per-genre", head="linear", epochs=epochs, patience=epochs, lr=lr, batch_size=batch_size, seed=seed
    )


def genre_aucs(y_true: np.ndarray, y_score: np.ndarray, genres: list[str]) -> dict[str, float]:
    """Test ROC-AUC per genre (NaN where the test side lacks positives or negatives) and their macro mean."""
    auc = {genre: roc_auc(y_true[:, g], y_score[:, g]) for g, genre in enumerate(genres)}
    defined = [a for a in auc.values() if a is not None]
    auc = {genre: float("nan") if a is None else a for genre, a in auc.items()}
    return {**auc, "macro": float(np.mean(defined)) if defined else float("nan")}


# ---- the original way: the backbone on every poster, every epoch, one model per genre


class Posters:
    """The frozen backbone run on posters decoded on demand, with the seconds spent decoding summed apart."""

    def __init__(self, backbone, preprocessing):
        self.backbone, self.preprocessing = backbone, preprocessing
        self.decode_seconds = 0.0

    def features(self, paths: list[Path]) -> torch.Tensor:
        start = time.perf_counter()
        batch = torch.from_numpy(np.stack([load_input(p, self.preprocessing) for p in paths]))
        self.decode_seconds += time.perf_counter() - start
        return self.backbone(batch)

    @torch.no_grad()
    def all_features(self, paths: list[Path], batch_size: int) -> torch.Tensor:
        return torch.cat([self.features(chunk) for chunk in batches(paths, batch_size)])


def batches(items, batch_size: int):
    step = len(items) if batch_size <= 0 else batch_size
    for start in range(0, len(items), step):
        yield items[start : start + step]


def train_genre_original(posters: Posters, paths, y, train_features, config, rng, genre: str) -> torch.nn.Module:
    """One genre's head, trained on the backbone's forward over its balanced sample, every epoch."""
    head = create_head(
        config.head_type, posters.backbone.num_features, 1, hidden=config.hidden_size, dropout=config.dropout_rate
    )
    head.set_standardisation(train_features)
    loss_fn = create_loss(config.loss, gamma_neg=config.gamma_neg, gamma_pos=config.gamma_pos, clip=config.clip)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    targets = torch.as_tensor(y, dtype=torch.float32)[:, None]
    for epoch in range(1, config.epochs + 1):
        start, decoded = time.perf_counter(), posters.decode_seconds
        head.train()
        chosen = rng.permutation(np.flatnonzero(balanced_sample_mask(y[:, None], rng)[:, 0]))
        losses = []
        for rows in batches(chosen, config.batch_size):
            features = posters.features([paths[i] for i in rows])
            assert not features.requires_grad, "a frozen backbone must record no graph"
            loss = loss_fn(head(features), targets[torch.as_tensor(rows)]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        logger.info(
            "original  %-10s epoch %d/%d  %4d posters  loss %.4f  %5.1f posters/s  decoding %3.0f%%",
            genre, epoch, config.epochs, len(chosen), np.mean(losses), len(chosen) / seconds,
            100 * (posters.decode_seconds - decoded) / seconds,
        )  # fmt: skip
    head.logit_offset.copy_(torch.from_numpy(prior_correction(y[:, None])))
    return head.eval()


def original_way(subset: Subset, config: TrainConfig, preprocessing, *, threads: int | None = DEFAULT_THREADS):
    """Train and score per-genre heads the original way; a :class:`WayResult` whose ``seconds`` add ``decode``."""
    posters = Posters(create_backbone(config.backbone).eval().requires_grad_(False), preprocessing)
    rng = np.random.default_rng(config.seed)
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        times = [time.perf_counter()]
        # Kept only for the heads' standardisation (the same set_standardisation as the cached way's head);
        # training itself runs the backbone afresh on every poster it samples.
        train_features = posters.all_features(subset.train_paths, config.batch_size)
        times.append(time.perf_counter())
        heads = [
            train_genre_original(posters, subset.train_paths, subset.y_train[:, g], train_features, config, rng, genre)
            for g, genre in enumerate(subset.genres)
        ]
        times.append(time.perf_counter())
        # One test pass serves every genre's head: fewer forwards than separate models, in the original's favour.
        test_features = posters.all_features(subset.test_paths, config.batch_size)
        scores = np.column_stack([predict_logits(head, test_features)[:, 0] for head in heads])
        times.append(time.perf_counter())

    seconds = dict(zip(("setup", "train", "test"), np.diff(times).tolist(), strict=True))
    seconds.update(total=times[-1] - times[0], decode=posters.decode_seconds)
    return WayResult(seconds, genre_aucs(subset.y_test, scores, subset.genres))


# ---- the cached way: features extracted once, then postergenre's per-genre training on them


def cached_way(subset: Subset, config: TrainConfig, preprocessing, cache: Path) -> WayResult:
    """Extract features into the empty folder ``cache``, train ``train_per_genre`` on them, score the test side;
    a :class:`WayResult` whose ``seconds`` add ``export`` and ``extract`` (the two parts of ``setup``)."""
    backbone = create_backbone(config.backbone).eval()
    start = time.perf_counter()
    # The export extraction would make on first use, made here to time it apart.
    if onnx_backbone(cache, backbone, preprocessing.input_size, weights_digest(backbone)) is None:
        logger.warning("no ONNX export: the cached way extracts with PyTorch, and its setup time is not ONNX Runtime's")
    built = time.perf_counter()
    paths = dict(zip(subset.train_ids + subset.test_ids, subset.train_paths + subset.test_paths, strict=True))
    features = extract_features(
        paths, config.backbone, preprocessing=preprocessing, cache_dir=cache, progress=False, device="cpu"
    )
    if features.failed:
        reason = next(iter(features.failed.values()))
        raise RuntimeError(f"{len(features.failed)} poster(s) cannot be read, e.g. {reason}; drop them from the CSV")
    extracted = time.perf_counter()

    train = (features.select(subset.train_ids), subset.y_train)
    result = train_per_genre(train, train, config)
    if result.best_epoch != config.epochs:
        logger.warning(
            "train_per_genre kept epoch %d of %d (training AUC fell), so its AUCs are not the last epoch's",
            result.best_epoch, config.epochs,
        )  # fmt: skip
    trained = time.perf_counter()
    scores = predict_logits(result.head, features.select(subset.test_ids))
    done = time.perf_counter()

    seconds = {
        "export": built - start,
        "extract": extracted - built,
        "setup": extracted - start,
        "train": trained - extracted,
        "test": done - trained,
        "total": done - start,
    }
    return WayResult(seconds, genre_aucs(subset.y_test, scores, subset.genres))


# ---- the report


def print_header(subset: Subset, config: TrainConfig, preprocessing, threads: int | None) -> None:
    height, width = preprocessing.input_size
    n_train, n_test = len(subset.train_ids), len(subset.test_ids)
    print(
        f"{config.backbone}, {preprocessing.resize} {height}x{width}; {n_train + n_test} posters "
        f"({n_train} train, {n_test} test); {config.epochs} epochs, {config.head} head, lr {config.learning_rate:g}, "
        f"batch {config.batch_size}, seed {config.seed}"
    )
    positives = subset.y_test.sum(0)
    print("test positives: " + ", ".join(f"{g} {p}" for g, p in zip(subset.genres, positives, strict=True)))
    for genre, p in zip(subset.genres, positives, strict=True):
        if min(p, n_test - p) < MIN_TEST_POSITIVES:
            print(f"warning: {genre} has {p} test positives of {n_test}; its AUC is noisy, raise --n")
    print(
        f"torch threads {threads or torch.get_num_threads()} (original way); ONNX Runtime on all "
        f"{os.cpu_count()} CPUs (cached way); load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def print_table(genres: list[str], original: WayResult, cached: WayResult) -> None:
    columns = [*genres, "macro"]
    print(
        f"\n{'way':<9} {'setup s':>8} {'train s':>8} {'test s':>7} {'total s':>8}  "
        + " ".join(f"{c:>8}" for c in columns)
    )
    for name, way in (("original", original), ("cached", cached)):
        s = way.seconds
        print(
            f"{name:<9} {s['setup']:8.1f} {s['train']:8.1f} {s['test']:7.1f} {s['total']:8.1f}  "
            + " ".join(f"{way.auc[c]:8.3f}" for c in columns)
        )
    o, c = original.seconds, cached.seconds
    print(
        f"setup: original = one no-grad pass over the training posters for the head's standardisation; "
        f"cached = ONNX export {c['export']:.1f} s + extraction of every poster {c['extract']:.1f} s"
    )
    print(f"original: decoding posters {o['decode']:.1f} s of its {o['total']:.1f} s")
    print(
        f"original / cached: {o['total'] / c['total']:.1f}x in all; {o['train'] / (c['extract'] + c['train']):.1f}x "
        f"epochs on images against extraction + epochs on features"
    )
    gaps = [original.auc[g] - cached.auc[g] for g in genres]
    largest = max(gaps, key=lambda d: abs(d) if np.isfinite(d) else -1)
    print(
        f"AUC, original - cached: macro {original.auc['macro'] - cached.auc['macro']:+.3f}, "
        f"largest per genre {largest:+.3f} (same frozen features: sampling, initialisation and float noise)"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=shared_dataset())
    parser.add_argument("--n", type=int, default=300, help="labelled posters, spread over the CSV (default 300)")
    parser.add_argument("--genres", nargs="+", default=list(DEFAULT_GENRES))
    parser.add_argument("--epochs", type=int, default=3)
    # 1e-3 brings a linear head near its best within 3-5 epochs (training/config.py); at the
    # training default of 1e-4, 3 epochs of a few steps leave the heads close to their initialisation.
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32, help="both ways (Keras' default)")
    parser.add_argument("--seed", type=int, default=0, help="split, sampling and initialisation")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads for the original way")
    return parser


def main() -> int:
    args = get_args_parser().parse_args()
    if not (args.data / "train.csv").is_file():
        print(f"skipped: the shared dataset is absent (looked in {args.data}); set POSTERGENRE_SHARED_DATASET")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    # At a fixed epoch count, "stopped on its epoch limit while still improving" is the point, not a problem.
    logging.getLogger("postergenre.training.loop").setLevel(logging.ERROR)

    subset = load_subset(args.data, args.n, args.genres, args.seed)
    config = benchmark_config(args.epochs, args.lr, args.batch_size, args.seed)
    preprocessing = resolve_preprocessing(config)
    print_header(subset, config, preprocessing, args.threads)

    with tempfile.TemporaryDirectory() as cache:
        cached = cached_way(subset, config, preprocessing, Path(cache))
    original = original_way(subset, config, preprocessing, threads=args.threads)

    print_table(subset.genres, original, cached)
    return 0


if __name__ == "__main__":
    sys.exit(main())
