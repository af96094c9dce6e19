"""Arguments that several subcommands share, declared once."""

from __future__ import annotations

import argparse


def add_dataset_arguments(parser: argparse.ArgumentParser, *, optional: bool = True) -> None:
    """DATA (a dataset folder; the built-in demo when omitted), --csv, --images, --skip-missing."""
    parser.add_argument(
        "data",
        nargs="?" if optional else None,
        metavar="DATA",
        help="dataset folder holding train.csv and images/ (default: the built-in demo dataset)"
        if optional
        else "dataset folder holding train.csv and images/",
    )
    parser.add_argument("--csv", metavar="FILE", help="labels CSV, if not DATA/train.csv")
    parser.add_argument("--images", metavar="DIR", help="poster folder, if not DATA/images")
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="go on without labelled posters that are missing or cannot be decoded",
    )


def load_dataset_from_args(args: argparse.Namespace):
    from postergenre.data.dataset import load_dataset
    from postergenre.data.demo import demo_dataset_root

    root = args.data
    if root is None and (args.csv is None or args.images is None):
        root = demo_dataset_root()
    return load_dataset(root, csv_path=args.csv, images=args.images, skip_missing=args.skip_missing)


def add_min_test_positives_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-test-positives",
        type=int,
        metavar="N",
        help="genres with fewer test positives are shown but flagged and kept out of the macro figures "
        "(default: 10); lower it only for tiny datasets, where every figure is noisy",
    )


def add_pooled_stages_argument(parser: argparse.ArgumentParser) -> None:
    """``--pooled-stages N``, shared by the commands that compute features, so that they cache the same ones."""
    parser.add_argument(
        "--pooled-stages",
        type=int,
        metavar="N",
        help="stages before the last whose pooled outputs join the features (default: the backbone's measured "
        "choice: 3 for the bundled ImageNet backbones, 0 for the others)",
    )
