"""Fine-tuning the backbone's last K stages against the frozen backbone, on one split.

Usage:
    python benchmarks/fine_tune.py [DATA] [--out FOLDER] [--ks 0 1 2] [--split SPLIT.csv]

Trains one run per K with the default settings on the image alone (EfficientNet-Lite0 at its poster input,
stretched, MLP head; --no-text, so that poster text does not blur what tuning the backbone buys):
K=0 first, whose split.csv (make_split, seed 0, poster groups) every other K reuses unless --split
names one, so all are scored on the same test set. Prints, per K, validation and test macro ROC-AUC
and AP (validation: the validation_predictions.csv that thresholds were tuned on) and the seconds
spent caching features or activations (0 when the cache already had them) and training (train_run
with a warm cache: training, thresholds, saving, ONNX export, test evaluation, report).
Decide on VALIDATION; test is for the report. No target: the question is whether fine-tuning beats
the frozen head by more than seed noise (about 0.002 validation AUC).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from postergenre.data.dataset import load_dataset
from postergenre.evaluation.metrics import evaluate_scores
from postergenre.features import extract_features
from postergenre.features.activations import cut_index
from postergenre.models.backbones import create_backbone
from postergenre.training.config import TrainConfig, resolve_preprocessing
from postergenre.training.run import train_run

DATA = "/work/shared/datasets/movie-posters"


def cache_seconds(dataset, config: TrainConfig) -> float:
    """Seconds to fill the feature (K=0) or activation cache this run reads."""
    preprocessing = resolve_preprocessing(config)
    cut = cut_index(create_backbone(config.backbone, pretrained=False), config.fine_tune) if config.fine_tune else None
    start = time.perf_counter()
    extract_features(
        {i: dataset.image_paths[i] for i in dataset.ids}, config.backbone, preprocessing=preprocessing, cut=cut
    )
    return time.perf_counter() - start


def validation_figures(run_dir: Path, dataset) -> tuple[float, float]:
    """Validation macro AUC and AP from the run's validation predictions, as the evaluation counts them."""
    scores = pd.read_csv(run_dir / "validation_predictions.csv", index_col="Id")
    scores.index = scores.index.astype(str)
    genres = list(scores.columns)
    y_true = dataset.labels.loc[scores.index, genres].to_numpy(dtype=np.int8)
    split = pd.read_csv(run_dir / "split.csv", index_col="Id")
    train_ids = split.index[split["split"] == "train"].astype(str)
    prevalence = dataset.labels.loc[train_ids, genres].to_numpy().mean(0)  # for the baselines, not printed
    metrics = evaluate_scores(
        y_true, scores.to_numpy(), genres, np.full(len(genres), 0.5), train_prevalence=prevalence, min_positives=10
    )
    return metrics["macro_roc_auc"], metrics["macro_average_precision"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=DATA)
    parser.add_argument("--out", default="fine_tune_runs", help="folder for one run folder per K")
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", help="a split.csv to use for every K (default: K=0's new split)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    out, split = Path(args.out), args.split
    rows = []
    for k in args.ks:
        dataset = load_dataset(args.data)
        config = TrainConfig(fine_tune=k, text="off")
        caching = cache_seconds(dataset, config)
        start = time.perf_counter()
        result = train_run(dataset, config, out / f"k{k}", split_path=split, progress=False)
        training = time.perf_counter() - start
        split = split or str(result.run_dir / "split.csv")
        val_auc, val_ap = validation_figures(result.run_dir, dataset)
        metrics = result.evaluation.metrics
        best = json.loads((result.run_dir / "config.json").read_text())["best_epoch"]
        rows.append(
            (k, val_auc, val_ap, metrics["macro_roc_auc"], metrics["macro_average_precision"], caching, training, best)
        )
        print_table(rows)


def print_table(rows) -> None:
    print(
        f"{'K':>2}  {'val AUC':>7}  {'val AP':>6}  {'test AUC':>8}  {'test AP':>7}  "
        f"{'cache s':>7}  {'train s':>7}  best epoch"
    )
    for k, val_auc, val_ap, test_auc, test_ap, caching, training, best in rows:
        print(
            f"{k:>2}  {val_auc:7.3f}  {val_ap:6.3f}  {test_auc:8.3f}  {test_ap:7.3f}  "
            f"{caching:7.0f}  {training:7.0f}  {best}",
            flush=True,
        )


if __name__ == "__main__":
    main()
