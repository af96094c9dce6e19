"""Compare heads on cached features: the measurement behind the training defaults.

Usage:
    python benchmarks/head_comparison.py FEATURES.npz SPLIT.csv [DATA]

FEATURES.npz holds ``ids`` and ``values`` (N, D) pooled features, and optionally ``flipped``
(the mirror images' features); SPLIT.csv is a ``split.csv`` (make_split, seed 0, poster groups).
Genres are those with >= 10 positives (select_genres); the macro figures cover the genres with
>= 10 positives in the split scored. Prints one row per configuration: validation and test macro
ROC-AUC and macro AP. Pick defaults on VALIDATION; the test columns are for the report.
Target: test macro ROC-AUC >= 0.80 and macro AP >= 0.35.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from postergenre.data.dataset import load_dataset
from postergenre.data.genres import select_genres
from postergenre.data.splits import load_split
from postergenre.inference.predictor import sigmoid
from postergenre.training.config import TrainConfig
from postergenre.training.loop import predict_logits
from postergenre.training.multilabel import train_multilabel
from postergenre.training.per_genre import train_per_genre

DATA = "/work/shared/datasets/movie-posters"
CONFIGS = {
    "multilabel linear bce": {"mode": "multilabel", "head": "linear", "loss": "bce"},
    "multilabel mlp bce": {"mode": "multilabel", "head": "mlp", "loss": "bce"},
    "multilabel linear asl": {"mode": "multilabel", "head": "linear", "loss": "asl"},
    "multilabel mlp asl": {"mode": "multilabel", "head": "mlp", "loss": "asl"},
    "per-genre linear (logistic)": {"mode": "per-genre", "head": "linear", "loss": "bce"},
    "per-genre mlp": {"mode": "per-genre", "head": "mlp", "loss": "bce"},
}


def macro(y_true, y_score, min_positives=10):
    keep = [g for g in range(y_true.shape[1]) if y_true[:, g].sum() >= min_positives]
    auc = np.mean([roc_auc_score(y_true[:, g], y_score[:, g]) for g in keep])
    ap = np.mean([average_precision_score(y_true[:, g], y_score[:, g]) for g in keep])
    return auc, ap, len(keep)


def load_sides(features_path, split_path, data_root, flip):
    dataset = load_dataset(data_root)
    store = np.load(features_path)
    ids = [str(i) for i in store["ids"]]
    values = store["values"]
    if flip:
        values = (values + store["flipped"]) / 2
    genres = select_genres(dataset.labels.loc[dataset.ids], 10).kept
    split = load_split(split_path)
    row = {id_: k for k, id_ in enumerate(ids)}
    sides = {}
    for side in ("train", "validation", "test"):
        side_ids = [i for i in split.index[split["split"] == side] if i in row]
        sides[side] = (values[[row[i] for i in side_ids]], dataset.labels.loc[side_ids, genres].to_numpy(np.int8))
    return sides, genres


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("features")
    parser.add_argument("split")
    parser.add_argument("data", nargs="?", default=DATA)
    parser.add_argument("--only", nargs="*", help="configuration names to run")
    parser.add_argument("--flip", choices=["yes", "no", "both"], default="both")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra TrainConfig settings")
    args = parser.parse_args()
    extra = {k: type(getattr(TrainConfig(), k))(v) for k, v in (item.split("=") for item in args.set)}
    flips = {"yes": [True], "no": [False], "both": [False, True]}[args.flip]

    print(
        f"{'configuration':<32} {'flip':<5} {'val AUC':>8} {'val AP':>7} {'test AUC':>8} {'test AP':>7} "
        f"{'epochs':>6} {'s':>5}"
    )
    for flip in flips:
        sides, _ = load_sides(args.features, args.split, args.data, flip)
        for name, settings in CONFIGS.items():
            if args.only and name not in args.only:
                continue
            config = TrainConfig(**settings, **extra)
            trainer = train_per_genre if config.mode == "per-genre" else train_multilabel
            start = time.perf_counter()
            result = trainer(sides["train"], sides["validation"], config)
            seconds = time.perf_counter() - start
            figures = []
            for side in ("validation", "test"):
                x, y = sides[side]
                auc, ap, _ = macro(y, sigmoid(predict_logits(result.head, x)))
                figures += [auc, ap]
            print(
                f"{name:<32} {'yes' if flip else 'no':<5} {figures[0]:8.4f} {figures[1]:7.4f} {figures[2]:8.4f} "
                f"{figures[3]:7.4f} {result.best_epoch:6d} {seconds:5.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
