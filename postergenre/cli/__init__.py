"""The ``postergenre`` command.

Each subcommand lives in its own module here with two functions: ``add_parser(subparsers)``
declares its arguments and ``run(args)`` does the work. Modules import nothing heavy at the top,
so ``postergenre --help`` answers at once; ``run`` imports what it needs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from postergenre import __version__
from postergenre.errors import PosterGenreError

# Subcommands in the order a user meets them.
COMMANDS = [
    "analyze",
    "features",
    "train",
    "evaluate",
    "predict",
    "compare",
    "explain",
    "filters",
    "ocr",
    "serve",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postergenre",
        description="Predict a movie's genres from its poster: analyse a poster dataset, train and "
        "evaluate genre models on pretrained backbones, explain and serve them.",
    )
    parser.add_argument("--version", action="version", version=f"postergenre {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"postergenre.cli.{name}").add_parser(subparsers)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    # Libraries we use log at INFO about their own internals; keep the CLI's output ours.
    for noisy in ("matplotlib", "PIL", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return args.run(args) or 0
    except PosterGenreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
