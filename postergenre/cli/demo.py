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
    parser.add_argument(
        "--out", metavar="DIR", default="demo", help="folder for everything it writes (default: ./demo)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from postergenre.cli import main

    out = Path(args.out)
    run_dir = out / "run"
    train = ["train", "--out", str(run_dir), "--seed", str(args.seed)]
    steps = [
        ("analyze the demo dataset", lambda: ["analyze", "--out", str(out / "analysis")]),
        (
            "train and evaluate the default model",
            lambda: [*train, "--min-test-positives", str(DEMO_MIN_TEST_POSITIVES)],
        ),
        ("predict a few test posters with the saved run", lambda: ["predict", str(run_dir), *test_posters(run_dir)]),
    ]
    start = time.perf_counter()
    for number, (title, make_argv) in enumerate(steps, 1):
        argv = make_argv()
        print(f"\n== {number}/{len(steps)} {title}: postergenre {' '.join(argv)}", flush=True)
        status = main(argv)
        if status:
            return status
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"  data analysis: {out / 'analysis' / 'analysis.html'}")
    print(f"  run report:    {out / 'run' / 'report.html'}")
    return 0


def test_posters(run_dir: Path) -> list[str]:
    """A few posters from the run's test split: ones the model has not seen."""
    from postergenre.data.demo import demo_dataset_root
    from postergenre.data.splits import load_split

    split = load_split(run_dir / "split.csv")
    ids = sorted(split.index[split["split"] == "test"])[:N_PREDICTED_POSTERS]
    return [str(demo_dataset_root() / "images" / f"{id_}.jpg") for id_ in ids]
