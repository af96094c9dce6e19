"""``postergenre compare RUN RUN...``: evaluated runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="compare evaluated runs side by side",
        description="Put evaluated runs side by side: headline figures, per-genre ROC AUC, compare.csv, "
        "compare_per_genre.csv, compare.png and an offline compare.html. Each RUN folder needs the metrics.json "
        "that `postergenre evaluate RUN` writes. Runs over different genres are compared on the genres they share.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", type=Path, help="run folders holding metrics.json")
    parser.add_argument(
        "--out", type=Path, default=Path("compare"), metavar="DIR", help="output folder (default: ./compare)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from postergenre.evaluation.compare import compare_runs, format_table, write_comparison

    comparison = compare_runs(args.runs)
    paths = write_comparison(comparison, args.out)

    print(format_table(comparison.headline))
    print()
    print(f"Per-genre ROC AUC ({len(comparison.common_genres)} genres):")
    print(format_table(comparison.per_genre_auc))
    # The notes (different genres or test sets, flagged genres) were logged as warnings by compare_runs.
    print(f"\nwrote {paths['html']} (and {paths['csv'].name}, {paths['per_genre_csv'].name}, {paths['png'].name})")
    return 0
