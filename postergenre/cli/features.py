"""``postergenre features``: extract and cache a backbone's pooled features for a dataset's posters."""

from __future__ import annotations

import argparse

from postergenre.cli.common import add_dataset_arguments, add_pooled_stages_argument, load_dataset_from_args

DEFAULT_BACKBONE = "efficientnet_lite0"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "features",
        help="extract and cache pooled backbone features for the posters",
        description="Compute a pretrained backbone's pooled features for the dataset's labelled posters and "
        "cache them on disk, so that training reuses them. A second run only computes what changed.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone name (default: {DEFAULT_BACKBONE})")
    parser.add_argument(
        "--resize",
        choices=["center_crop", "pad", "stretch"],
        help="how a poster becomes the network's input (default: the policy measured best for posters)",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each poster's features with its mirror image's (default: the measured best)",
    )
    add_pooled_stages_argument(parser)
    parser.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="posters per forward pass")
    parser.add_argument("--all", action="store_true", help="also the posters that have no labels")
    parser.add_argument("--weights", metavar="FILE", help="weights file for the backbone (default: its bundled ones)")
    parser.add_argument("--device", help="cpu (ONNX Runtime) or cuda (PyTorch); default: the GPU if there is one")
    parser.set_defaults(run=run)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    import time

    from postergenre.features import DEFAULT_FLIP, default_preprocessing, extract_features

    dataset = load_dataset_from_args(args)
    paths = dict(dataset.image_paths)
    if args.all:
        paths.update(dataset.unlabelled_images)
    preprocessing = default_preprocessing(args.backbone, resize=args.resize)
    flip = DEFAULT_FLIP if args.flip is None else args.flip

    start = time.perf_counter()
    features = extract_features(
        paths,
        args.backbone,
        preprocessing=preprocessing,
        flip=flip,
        batch_size=args.batch_size,
        progress=not args.quiet,
        device=args.device,
        weights=args.weights,
        pooled_stages=args.pooled_stages,
    )
    seconds = time.perf_counter() - start

    print_summary(features, seconds, preprocessing, flip)
    return 0


def print_summary(features, seconds: float, preprocessing, flip: bool) -> None:
    spec = features.spec
    height, width = preprocessing.input_size
    print(
        f"{spec['backbone']} features, {preprocessing.resize} {height}x{width}{' + flip' if flip else ''}: "
        f"{len(features)} posters x {spec['num_features']}"
    )
    rate = (
        f"{spec['n_computed'] / seconds:.1f} img/s computed with {spec['engine']}"
        if spec["n_computed"]
        else "all cached"
    )
    print(
        f"  {spec['n_cached']} cached, {spec['n_computed']} computed, {len(features.failed)} failed "
        f"in {seconds:.1f} s ({rate})"
    )
    for id_, reason in list(features.failed.items())[:10]:
        print(f"  failed {id_}: {reason}")
    if len(features.failed) > 10:
        print(f"  ... and {len(features.failed) - 10} more failed")
    print(f"  cache: {spec['cache']}")
