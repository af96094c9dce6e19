"""``postergenre train``: train a genre model on a poster dataset and write a run folder."""

from __future__ import annotations

import argparse

from postergenre.cli.common import add_dataset_arguments, add_min_test_positives_argument, load_dataset_from_args

# Kept in step with postergenre.training.config without importing it (and torch) for --help.
MODES = ("multilabel", "per-genre")
HEADS = ("linear", "mlp")
LOSSES = ("bce", "asl")
RESIZE_POLICIES = ("center_crop", "pad", "stretch")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a genre model and evaluate it on the test split",
        description="Train a genre head on pooled backbone features (extracted once, cached), tune one "
        "threshold per genre on validation, and evaluate on the test split. Everything lands in the "
        "run folder --out: settings, split, history, model, backbone (ONNX), metrics and report.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to write (created)")
    parser.add_argument("--backbone", metavar="NAME", help="pretrained backbone (default: efficientnet_lite0)")
    parser.add_argument("--weights", metavar="FILE", help="backbone weights file, if not the packaged ones")
    parser.add_argument(
        "--mode", choices=MODES, default=None, help="one multi-label head, or one balanced model per genre"
    )
    parser.add_argument("--head", choices=HEADS, default=None, help="linear (logistic) or one hidden layer")
    parser.add_argument("--loss", choices=LOSSES, default=None, help="binary cross-entropy or asymmetric loss")
    parser.add_argument("--resize", choices=RESIZE_POLICIES, default=None, help="how a poster meets the input size")
    parser.add_argument("--input-size", metavar="HxW", type=_size, help="network input, e.g. 320x224")
    parser.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None, help="average with the mirror image"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, metavar="N", help="most epochs (early stopping may end sooner)"
    )
    parser.add_argument(
        "--patience", type=int, default=None, metavar="N", help="epochs without validation gain before stopping"
    )
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="mini-batch size; 0 for full batch")
    parser.add_argument(
        "--min-positives",
        type=int,
        metavar="N",
        help="train only genres with at least N positive posters (default: 10)",
    )
    add_min_test_positives_argument(parser)
    parser.add_argument("--seed", type=int, help="seed of the split, the sampling and the initialisation")
    parser.add_argument("--split", metavar="FILE", help="reuse this split.csv (keeps an earlier run's test set)")
    parser.set_defaults(run=run)


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 320x224, got {text!r}") from None
    return height, width


def build_config(args: argparse.Namespace):
    """A TrainConfig with the settings given on the command line; the defaults for the rest."""
    from postergenre.training.config import TrainConfig

    given = {
        "backbone": args.backbone,
        "weights": args.weights,
        "mode": args.mode,
        "head": args.head,
        "loss": args.loss,
        "resize": args.resize,
        "input_size": args.input_size,
        "flip": args.flip,
        "epochs": args.epochs,
        "patience": args.patience,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "min_positives": args.min_positives,
        "min_test_positives": args.min_test_positives,
        "seed": args.seed,
    }
    try:
        return TrainConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        from postergenre.errors import PosterGenreError

        raise PosterGenreError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from postergenre.training.run import train_run

    config = build_config(args)
    dataset = load_dataset_from_args(args)
    result = train_run(
        dataset, config, args.out, split_path=args.split, skip_missing=args.skip_missing, progress=not args.quiet
    )
    print_headline(result.evaluation.metrics)
    print(f"run folder: {result.run_dir}")
    if result.evaluation.report_path:
        print(f"report: {result.evaluation.report_path}")
    return 0


def print_headline(metrics: dict) -> None:
    """The test figures that matter, each beside what scoring every poster with the genre's prevalence gets."""
    baseline = (metrics.get("baselines") or {}).get("prevalence") or {}
    dataset = metrics.get("dataset") or {}
    print(
        f"{dataset.get('split', 'test')} set: {metrics.get('n_samples', '?')} posters, "
        f"{len(metrics.get('genres_in_macro') or [])} genres in the macro figures"
    )
    for key, label in (
        ("macro_roc_auc", "macro ROC-AUC"),
        ("macro_average_precision", "macro AP"),
        ("micro_roc_auc", "micro ROC-AUC"),
        ("macro_f1", "macro F1"),
    ):
        if key in metrics:
            print(f"  {label:<15} {_figure(metrics[key])}   (prevalence baseline {_figure(baseline.get(key))})")
    for warning in metrics.get("warnings") or []:
        print(f"  warning: {warning}")


def _figure(value) -> str:
    return "  n/a" if value is None else f"{value:.3f}"
