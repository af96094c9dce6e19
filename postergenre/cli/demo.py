"""``postergenre demo``: the whole tool on the built-in demo dataset, in a couple of minutes.

It runs the same subcommands a user would, one after the other: analyze the data, train the
default model (features, head, thresholds, test evaluation and report), then predict a few
posters with the saved run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# The demo's test split holds about 5 positives per genre (280 posters, 20% test); at the
# usual minimum of 10 every genre would be flagged and the headline figures left empty.
DEMO_MIN_TEST_POSITIVES = 4
N_PREDICTED_POSTERS = 3


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="analyze, train, evaluate and predict on the built-in demo dataset",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("--out", metavar="DIR", default="demo", help="folder for everything it writes (default: ./demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from postergenre.cli import main
    from postergenre.data.demo import demo_dataset_root

    out = Path(args.out)
    demo = demo_dataset_root()
    posters = sorted((demo / "images").glob("*.jpg"))[:N_PREDICTED_POSTERS]
    steps = [
        ("analyze the demo dataset", ["analyze", "--out", str(out / "analysis")]),
        (
            "train and evaluate the default model",
            ["train", "--out", str(out / "run"), "--seed", str(args.seed), "--min-test-positives", str(DEMO_MIN_TEST_POSITIVES)],
        ),
        ("predict a few posters with the saved run", ["predict", str(out / "run"), *map(str, posters)]),
    ]
    start = time.perf_counter()
    for number, (title, argv) in enumerate(steps, 1):
        print(f"\n== {number}/{len(steps)} {title}: postergenre {' '.join(argv)}", flush=True)
        status = main(argv)
        if status:
            return status
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"  data analysis: {out / 'analysis' / 'analysis.html'}")
    print(f"  run report:    {out / 'run' / 'report.html'}")
    return 0
