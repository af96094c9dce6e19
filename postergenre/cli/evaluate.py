"""``postergenre evaluate``: score a trained run on its test split or on another dataset."""

from __future__ import annotations

import argparse

from postergenre.cli.common import add_dataset_arguments, add_min_test_positives_argument, load_dataset_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on its test split or another dataset",
        description="Score a run folder's model on its own test split (default) or on every poster of "
        "another dataset (genres matched by name; genres only one side has are reported and skipped). "
        "Writes metrics.json and report.html.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="run folder written by postergenre train")
    add_dataset_arguments(parser)
    parser.set_defaults(data=None)
    parser.add_argument("--out", metavar="DIR", help="where to write (default: RUN, or RUN/evaluation-<DATA>)")
    add_min_test_positives_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from postergenre.cli.train import print_headline
    from postergenre.training.run import evaluate_run

    given = args.data is not None or (args.csv is not None and args.images is not None)
    dataset = load_dataset_from_args(args) if given else None
    evaluation = evaluate_run(
        args.run_dir, dataset, out_dir=args.out, min_test_positives=args.min_test_positives, progress=not args.quiet
    )
    skipped = evaluation.metrics.get("skipped_genres") or {}
    if skipped.get("not_in_data"):
        print(f"skipped (not in the data): {', '.join(skipped['not_in_data'])}")
    if skipped.get("not_in_model"):
        print(f"skipped (unknown to the model): {', '.join(skipped['not_in_model'])}")
    print_headline(evaluation.metrics)
    print(f"metrics: {evaluation.metrics_path}")
    if evaluation.report_path:
        print(f"report: {evaluation.report_path}")
    return 0
