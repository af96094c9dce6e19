"""``postergenre train``: train a genre model on a poster dataset and write a run folder."""

from __future__ import annotations

import argparse

from postergenre.cli.common import (
    add_dataset_arguments,
    add_min_test_positives_argument,
    add_pooled_stages_argument,
    load_dataset_from_args,
)

# The resize policies of postergenre.models.preprocessing, written out so that --help does not
# import PIL; a test keeps them equal.
RESIZE_POLICIES = ("center_crop", "pad", "stretch")


def add_parser(subparsers) -> None:
    from postergenre.training.config import (
        DEFAULT_LR,
        HEADS,
        IMAGE_BACKBONE,
        LOSSES,
        MODES,
        PRECISIONS,
        TUNED_MLP_LR,
        TrainConfig,
    )

    default = TrainConfig.default
    parser = subparsers.add_parser(
        "train",
        help="train a genre model and evaluate it on the test split",
        description="Train a genre head on pooled backbone features (extracted once, cached), tune one "
        "threshold per genre on validation, and evaluate on the test split. Everything lands in the "
        "run folder --out: settings, split, history, model, backbone (ONNX), metrics and report. "
        "The defaults are the configuration that measured best on validation.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to write (created)")
    parser.add_argument(
        "--backbone",
        metavar="NAME",
        help=f"pretrained backbone (default: {default('backbone')}), NAME@HxW with its input size; NAME+NAME... "
        "trains an ensemble, one head per backbone with their logits averaged, each member at its own input, "
        "e.g. efficientnet_lite0+mobilenet_v2@256x160+efficientnet_lite2@320x192 (the best measured; slower)",
    )
    parser.add_argument("--weights", metavar="FILE", help="backbone weights file, if not the packaged ones")
    parser.add_argument(
        "--mode",
        choices=MODES,
        help=f"one multi-label head, or one balanced model per genre (default: {default('mode')})",
    )
    parser.add_argument("--head", choices=HEADS, help=f"logistic, or one hidden layer (default: {default('head')})")
    parser.add_argument(
        "--loss", choices=LOSSES, help=f"binary cross-entropy or asymmetric loss (default: {default('loss')})"
    )
    parser.add_argument(
        "--resize", choices=RESIZE_POLICIES, help=f"how a poster meets the input size (default: {default('resize')})"
    )
    parser.add_argument(
        "--input-size",
        metavar="HxW",
        type=_size,
        help="network input (default: the backbone's for posters, e.g. 320x224 for efficientnet_lite0 stretched)",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help=f"average features with the mirror image's (default: {'on' if default('flip') else 'off'})",
    )
    add_pooled_stages_argument(parser)
    parser.add_argument(
        "--augment",
        action="store_true",
        default=None,
        help=f"random flip, crop and colour jitter while training on images ({IMAGE_BACKBONE} only)",
    )
    parser.add_argument(
        "--fine-tune",
        type=int,
        metavar="K",
        help="also train the backbone's last K stages (blocks), counted from the end: for EfficientNet-Lite "
        "and MobileNetV2 (stem, stage1..stage7, head) 1 is the final 1x1 conv 'head', 2 is stage7 + head, ... "
        "up to 9. The activations entering those stages are computed once and cached, so it runs on a CPU "
        f"(default: {default('fine_tune')}, a frozen backbone)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"most epochs; early stopping may end sooner (default: {default('epochs')})",
    )
    parser.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help=f"epochs without validation gain before stopping (default: {default('patience')})",
    )
    parser.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        help="once validation has chosen the epochs, train the saved heads again on train + validation for as "
        "many (default: on for heads on cached features, off when the backbone trains)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        help=f"AdamW learning rate (default: {TUNED_MLP_LR:g} for the MLP head on a frozen backbone's features, "
        f"{DEFAULT_LR:g} otherwise)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"mini-batch size, 0 for full batch (default: {default('batch_size')})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the matrix products of head training: bf16 is about twice as fast where the CPU has it natively "
        "(AVX512-BF16, AMX) and measured within seed noise of fp32 (default: auto, bf16 there and fp32 elsewhere)",
    )
    parser.add_argument(
        "--min-positives",
        type=int,
        metavar="N",
        help=f"train only genres with at least N positive posters (default: {default('min_positives')})",
    )
    parser.add_argument(
        "--seed", type=int, help=f"seed of the split, sampling and initialisation (default: {default('seed')})"
    )
    add_text_arguments(parser)
    add_min_test_positives_argument(parser)
    parser.add_argument("--split", metavar="FILE", help="reuse this split.csv (keeps an earlier run's test set)")
    parser.set_defaults(run=run)


def add_text_arguments(parser) -> None:
    """--text / --no-text (default auto) and --fusion: poster text beside the image."""
    from postergenre.training.config import FUSIONS

    text = parser.add_mutually_exclusive_group()
    text.add_argument(
        "--text",
        dest="text",
        action="store_const",
        const="on",
        help="fuse the poster's text (OCR, sentence embedding) with the image; needs the text extra "
        "(default: auto, which tries it when the extra is installed and keeps it if validation AUC gains)",
    )
    text.add_argument("--no-text", dest="text", action="store_const", const="off", help="read the image only")
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        help="concat: image and text features in one head; late: two heads, logits blended with a weight "
        "tuned on validation; auto: the better on validation, one more head to train (default: late, "
        "which beat concat on validation on the shared dataset)",
    )


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
        "pooled_stages": args.pooled_stages,
        "augment": args.augment,
        "fine_tune": args.fine_tune,
        "epochs": args.epochs,
        "patience": args.patience,
        "refit": args.refit,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "min_positives": args.min_positives,
        "min_test_positives": args.min_test_positives,
        "seed": args.seed,
        "text": args.text,
        "fusion": args.fusion,
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
    """The test figures that matter, each beside the trivial baseline it must beat.

    Ranking figures beside scoring every poster with each genre's prevalence; F1 beside saying
    yes to every genre, which F1 rewards. Warnings were already logged by the evaluation.
    """
    baselines = metrics.get("baselines") or {}
    dataset = metrics.get("dataset") or {}
    print(
        f"{dataset.get('split', 'test')} set: {metrics.get('n_samples', '?')} posters, "
        f"{len(metrics.get('genres_in_macro') or [])} genres in the macro figures"
    )
    for key, label, baseline in (
        ("macro_roc_auc", "macro ROC-AUC", "prevalence"),
        ("macro_average_precision", "macro AP", "prevalence"),
        ("micro_roc_auc", "micro ROC-AUC", "prevalence"),
        ("macro_f1", "macro F1", "always_yes"),
    ):
        if key in metrics:
            reference = (baselines.get(baseline) or {}).get(key)
            name = baseline.replace("_", "-")
            print(f"  {label:<15} {_figure(metrics[key])}   ({name} baseline {_figure(reference)})")


def _figure(value) -> str:
    return "  n/a" if value is None else f"{value:.3f}"
