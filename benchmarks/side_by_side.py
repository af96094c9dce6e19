"""Each backbone, both modes and the custom CNN side by side, on one split of the shared dataset.

    python benchmarks/side_by_side.py [--data DIR] [--work DIR] [--cache DIR] [--runs NAME,NAME...]
        [--cnn-epochs N] [--quick N]

Trains, each in a fresh process as a user would (``postergenre train DATA --out WORK/NAME ...``), on
the standard split (seed 0) that the first finished run draws and every later run reuses through
``--split WORK/split.csv``:

1. ``lite0``: efficientnet_lite0, one multi-label head (the default MLP), image only (``--no-text``);
2. ``per-genre``: efficientnet_lite0, ``--mode per-genre`` (the original work's method), image only;
3. ``mobilenet_v2``: mobilenet_v2, multi-label, image only;
4. ``lite2``: efficientnet_lite2, multi-label, image only;
5. ``custom_cnn``: the original work's small CNN from scratch on the images (``--augment``), image only,
   for at most ``--cnn-epochs`` epochs (default 8): it runs on the images every epoch, not on cached
   features, so each epoch on 2 CPU cores is long;
6. ``default``: the default configuration (poster text on auto: OCR of every poster, kept if validation
   AUC gains);
7. ``ensemble``: efficientnet_lite0 at 320x224, mobilenet_v2 and efficientnet_lite2 side by side (one
   head each, logits averaged), image only; 8. ``ensemble+text``: the same with poster text on auto.

All runs share one feature cache (default WORK/cache), so ``lite0`` and ``per-genre`` extract their
features once. Prints, per run, its wall time and the test macro ROC-AUC, macro AP and micro ROC-AUC
from its metrics.json, then one table with the prevalence baseline, then runs ``postergenre compare``
on every finished run into WORK/compare (table, per-genre plot, HTML page).

The runs stay in WORK (default out/side-by-side): a rerun reuses every run folder that already holds
metrics.json and was trained with the same arguments (its earlier wall time is shown), so an interrupted
benchmark resumes where it stopped; a run folder without metrics.json was interrupted and is trained
again, as is one trained with other arguments (another ``--cnn-epochs``). WORK's runs are all on one
dataset and ``--quick``: the script refuses to mix in another. A failed run is reported with the
tail of its output and the others go on; the script then exits 1. ``--quick N`` trains on the first N
labelled posters only (a smoke run; its figures are not comparable, and genres need only 3 test
positives to count). Skips with a message where the shared dataset is absent (looked for in
../shared/datasets/movie-posters, or set POSTERGENRE_SHARED_DATASET, or pass --data). Timings on the
shared, loaded 2-core machine are noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import core_targets  # noqa: E402  (a sibling script: its helpers run the CLI in timed child processes)
import feature_throughput  # noqa: E402  (where the shared dataset is looked for)

# custom_cnn trains on the 300x300 pixels every epoch: 18 s an epoch on the first 150 posters (2 busy cores,
# load 2.6), so some 10-15 minutes an epoch on the full dataset; 8 epochs are 1.5-2 hours of the benchmark.
CNN_EPOCHS = 8
# With --quick the test side holds a few dozen posters; at the usual 10 test positives almost no genre
# would count, and the macro figures would be missing instead of merely noisy.
QUICK_MIN_TEST_POSITIVES = 3
SETTINGS_FILE = "benchmark.json"  # what WORK's runs were trained on, so a resume never mixes two datasets
RUNS_FILE = "runs.json"  # each finished run's arguments (to tell whether it can be reused) and wall time
SPLIT_FILE = "split.csv"


def run_specs(cnn_epochs: int = CNN_EPOCHS) -> dict[str, list[str]]:
    """The ``postergenre train`` arguments of each run, by name, in the order they are trained."""
    return {
        "lite0": ["--backbone", "efficientnet_lite0", "--no-text"],
        "per-genre": ["--backbone", "efficientnet_lite0", "--mode", "per-genre", "--no-text"],
        "mobilenet_v2": ["--backbone", "mobilenet_v2", "--no-text"],
        "lite2": ["--backbone", "efficientnet_lite2", "--no-text"],
        "custom_cnn": ["--backbone", "custom_cnn", "--augment", "--epochs", str(cnn_epochs), "--no-text"],
        "default": [],
        "ensemble": ["--backbone", core_targets.ENSEMBLE, "--no-text"],
        "ensemble+text": ["--backbone", core_targets.ENSEMBLE],
    }


@dataclass
class RunResult:
    """One run's outcome: its folder, wall seconds (None if unknown) and metrics, or the error that ended it."""

    name: str
    run: Path
    seconds: float | None = None
    metrics: dict | None = None
    reused: bool = False
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Choosing and preparing the runs


def select_runs(specs: dict[str, list[str]], names: str | None) -> dict[str, list[str]]:
    """The runs named in the comma-separated ``names`` (all when None), kept in training order."""
    if names is None:
        return dict(specs)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in specs]
    if unknown or not wanted:
        raise ValueError(
            f"--runs: unknown run(s) {', '.join(unknown) or '(none given)'}; expected a comma-separated subset of "
            f"{','.join(specs)}"
        )
    return {name: args for name, args in specs.items() if name in wanted}


def check_settings(work: Path, settings: dict) -> None:
    """Record what WORK's runs are trained on; refuse to resume runs made on another dataset or subset."""
    path = work / SETTINGS_FILE
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != settings:
            raise ValueError(
                f"{path}: the runs in {work} were trained with {earlier}, not {settings}; pass another --work "
                f"or delete {work} to start afresh"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def train_arguments(dataset_args: list[str], run_args: list[str], work: Path, quick: bool) -> list[str]:
    """``postergenre train`` arguments for one run: the data, its own settings, and the shared split once drawn."""
    split = work / SPLIT_FILE
    extra = ["--split", str(split)] if split.is_file() else []
    if quick:
        extra += ["--min-test-positives", str(QUICK_MIN_TEST_POSITIVES)]
    return [*dataset_args, *run_args, *extra]


def finished(run: Path) -> bool:
    # metrics.json is written last, after the model and the evaluation, so a folder without it was interrupted.
    return (run / "metrics.json").is_file()


def keep_split(work: Path, run: Path) -> None:
    """Make ``run``'s split the one every later run reuses, unless one is kept already."""
    if not (work / SPLIT_FILE).is_file():
        shutil.copyfile(run / SPLIT_FILE, work / SPLIT_FILE)


# ---------------------------------------------------------------------------------------------
# Training


def train_run(name: str, run_args: list[str], dataset_args: list[str], work: Path, cache: Path, quick: bool):
    """Train one run in a child process, or reuse its finished folder; a :class:`RunResult` either way."""
    run = work / name
    record = load_records(work).get(name, {})
    # A folder with no record was finished but not recorded (killed in between): reused as it stands.
    same_arguments = record.get("arguments", run_args) == run_args
    if finished(run) and same_arguments:
        print(f"{name}: reused {run} (it holds metrics.json)", flush=True)
        keep_split(work, run)
        return RunResult(name, run, record.get("seconds"), read_metrics(run), reused=True)
    if run.exists():
        why = "trained with other arguments" if finished(run) else "no metrics.json: an interrupted run"
        print(f"{name}: {run} has {why}; training it again", flush=True)
        shutil.rmtree(run)

    arguments = train_arguments(dataset_args, run_args, work, quick)
    command = core_targets.postergenre_command("train", *arguments, "--out", str(run))
    print(f"{name}: postergenre train {' '.join(arguments)} --out {run}", flush=True)
    try:
        seconds, rss, stdout = core_targets.timed_run(command, core_targets.child_env(cache))
    except core_targets.CommandFailed as exc:
        print(f"{name} FAILED: {exc}", flush=True)
        return RunResult(name, run, error=str(exc).splitlines()[0])
    print(core_targets.indent(stdout))

    save_record(work, name, run_args, seconds)
    keep_split(work, run)
    result = RunResult(name, run, seconds, read_metrics(run))
    print(f"{name}: {seconds:.1f} s, max RSS {rss} MiB; {quality_text(result.metrics)}", flush=True)
    return result


def load_records(work: Path) -> dict[str, dict]:
    path = work / RUNS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_record(work: Path, name: str, run_args: list[str], seconds: float) -> None:
    records = load_records(work)
    records[name] = {"arguments": run_args, "seconds": round(seconds, 1)}
    (work / RUNS_FILE).write_text(json.dumps(records, indent=2) + "\n")


def read_metrics(run: Path) -> dict | None:
    try:
        return json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {run / 'metrics.json'}: {exc}; evaluate the run again (postergenre evaluate {run})")
        return None


# ---------------------------------------------------------------------------------------------
# The table and the comparison

FIGURES = {"macro_roc_auc": "macro AUC", "macro_average_precision": "macro AP", "micro_roc_auc": "micro AUC"}


def quality_text(metrics: dict | None) -> str:
    if metrics is None:
        return "no metrics"
    figures = ", ".join(f"{label} {number(metrics.get(key))}" for key, label in FIGURES.items())
    return (
        f"test {figures} ({metrics.get('n_samples', '?')} posters, {len(metrics.get('genres_in_macro') or [])} genres)"
    )


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def prevalence(metrics: dict | None) -> dict:
    return ((metrics or {}).get("baselines") or {}).get("prevalence") or {}


def table_rows(results: list[RunResult]) -> list[list[str]]:
    """Header, one row per run, and the prevalence baseline of the first run with metrics."""
    rows = [["run", "wall s", *FIGURES.values(), "genres"]]
    for r in results:
        if r.error is not None:
            rows.append([r.name, "FAILED", "", "", "", ""])
            continue
        seconds = "?" if r.seconds is None else f"{r.seconds:.1f}"
        metrics = r.metrics or {}
        rows.append(
            [
                r.name,
                seconds + (" (earlier)" if r.reused else ""),
                *(number(metrics.get(key)) for key in FIGURES),
                str(len(metrics.get("genres_in_macro") or [])),
            ]
        )
    scored = [r for r in results if r.metrics is not None]
    if scored:
        baseline = prevalence(scored[0].metrics)
        rows.append(["prevalence baseline", "-", *(number(baseline.get(key)) for key in FIGURES), ""])
    return rows


def baseline_warnings(results: list[RunResult]) -> list[str]:
    """A line per run whose prevalence baseline differs from the first's: its test posters or genres differ."""
    scored = [r for r in results if r.metrics is not None]
    if not scored:
        return []
    first = prevalence(scored[0].metrics)
    return [
        f"warning: {r.name}'s prevalence baseline differs from {scored[0].name}'s: another test set or other "
        f"genres, so its figures are not side by side; delete {r.run} and rerun"
        for r in scored[1:]
        if any(abs((prevalence(r.metrics).get(k) or 0) - (first.get(k) or 0)) > 1e-9 for k in FIGURES)
    ]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def compare_runs(results: list[RunResult], work: Path, cache: Path) -> Path | None:
    """``postergenre compare`` over the finished runs into WORK/compare; that folder, or None."""
    runs = [str(r.run) for r in results if r.metrics is not None]
    if not runs:
        print("compare: no finished run to compare")
        return None
    out = work / "compare"
    command = core_targets.postergenre_command("compare", *runs, "--out", str(out))
    try:
        _, _, stdout = core_targets.timed_run(command, core_targets.child_env(cache))
    except core_targets.CommandFailed as exc:
        print(f"compare FAILED: {exc}")
        return None
    print(core_targets.indent(stdout))
    print(f"comparison: {out / 'compare.csv'} (table), {out / 'compare.png'} (per-genre plot), {out / 'compare.html'}")
    return out


# ---------------------------------------------------------------------------------------------
# Main


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: the shared movie-poster dataset)")
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "out" / "side-by-side",
        metavar="DIR",
        help="folder for the runs and the comparison, kept; a rerun reuses its finished runs (default: "
        "out/side-by-side)",
    )
    parser.add_argument(
        "--cache", type=Path, metavar="DIR", help="feature cache shared by all runs (default: WORK/cache)"
    )
    parser.add_argument(
        "--runs", metavar="NAME,NAME", help=f"a subset of the runs, in training order: {','.join(run_specs())}"
    )
    parser.add_argument(
        "--cnn-epochs",
        type=int,
        default=CNN_EPOCHS,
        metavar="N",
        help=f"most epochs of the custom_cnn run, which trains on the images themselves (default {CNN_EPOCHS})",
    )
    parser.add_argument("--quick", type=int, metavar="N", help="smoke run on the first N labelled posters")
    return parser


def main() -> int:
    args = get_args_parser().parse_args()
    data = (args.data or feature_throughput.shared_dataset()).resolve()
    if not (data / "train.csv").is_file():
        print(f"skipped: no dataset at {data} (no train.csv); pass --data or set POSTERGENRE_SHARED_DATASET")
        return 0
    work = args.work.resolve()
    cache = (args.cache or work / "cache").resolve()
    try:
        specs = select_runs(run_specs(args.cnn_epochs), args.runs)
        check_settings(work, {"data": str(data), "quick": args.quick})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quick = args.quick is not None
    dataset_args = core_targets.dataset_arguments(data, args.quick, work)
    print(
        f"side by side on {data}{f' (QUICK: first {args.quick} posters)' if quick else ''}; {core_targets.load_text()}"
    )

    results = [train_run(name, run_args, dataset_args, work, cache, quick) for name, run_args in specs.items()]

    print(f"\nafter the runs: {core_targets.load_text()}")
    if quick:
        print(f"QUICK run on {args.quick} posters: figures are noisy and not comparable to full runs")
    print(format_table(table_rows(results)))
    for line in baseline_warnings(results):
        print(line)
    for r in results:
        if r.error is not None:
            print(f"{r.name} failed: {r.error}")
    compare_runs(results, work, cache)
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
