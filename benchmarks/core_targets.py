"""Every figure of the transfer-learning core beside its target, on the shared dataset.

    python benchmarks/core_targets.py [--data DIR] [--quick [N]] [--throughput-n N] [--no-ensemble] [--work DIR]

Runs, as a user would, in fresh processes with the default settings:

1. cold image-only pipeline: ``postergenre train DATA --no-text --out RUN`` with an empty
   POSTERGENRE_CACHE_DIR (ONNX export, features, training, evaluation, report); target <= 120 s;
2. cold default pipeline: ``postergenre train DATA --out RUN`` (poster text tried: OCR of every
   poster too) with another empty cache; target <= 8 minutes;
3. warm default pipeline: the same with the cache kept and ``--split RUN/split.csv``; target <= 15 s;
4. quality: test macro ROC-AUC (>= 0.80) and macro AP (>= 0.35) of both runs from metrics.json,
   beside the prevalence baseline; the default run against the text target too (>= 0.82 / 0.38),
   and the validation macro AUC of every text candidate it tried (image, text alone, fusions);
5. extraction throughput: end-to-end images/s over forward-only images/s, measured in one run
   with the helpers of ``benchmarks/feature_throughput.py``; target >= 0.75;
6. ``postergenre predict RUN POSTER`` in a fresh process, median of 3; target <= 2 s;
7. the peak memory (max RSS) of the cold default train process, printed without a target;
8. the best image features measured: the ensemble ``--backbone efficientnet_lite0+mobilenet_v2@256x160+
   efficientnet_lite2@320x192`` on the default run's split, timed (its other backbones' features computed,
   then warm) and its quality against both targets (``--no-ensemble`` skips it).

``--quick N`` trains on the first N labelled posters only (default 1500): a smoke run whose
figures are NOT comparable to the targets (marked n/c). Skips with a message where the shared
dataset is absent (looked for in ../shared/datasets/movie-posters, or set
POSTERGENRE_SHARED_DATASET, or pass --data). Exits 1 if a full run misses a target. The load
average is printed: on a shared machine the timings are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import feature_throughput  # noqa: E402  (a sibling script: its helpers measure the throughput ratio)

TARGET_COLD_S = 120.0
TARGET_COLD_TEXT_S = 480.0  # with OCR of every poster
TARGET_WARM_S = 15.0
TARGET_AUC = 0.80
TARGET_AP = 0.35
TARGET_TEXT_AUC = 0.82  # image and poster text together
TARGET_TEXT_AP = 0.38
TARGET_RATIO = feature_throughput.TARGET_RATIO
TARGET_PREDICT_S = 2.0
PREDICT_REPEATS = 3
QUICK_DEFAULT = 1500
# The best image features measured (postergenre.training.ensemble): not the default, for its time.
ENSEMBLE = "efficientnet_lite0+mobilenet_v2@256x160+efficientnet_lite2@320x192"


@dataclass
class Figure:
    name: str
    measured: float | None
    unit: str = ""
    target: float | None = None
    at_least: bool = False  # the target is a floor (quality, ratio) rather than a ceiling (time)
    note: str = ""
    format: str = ".3f"  # ratios and scores; times ".1f", memory ".0f"

    def verdict(self, comparable: bool) -> str:
        if self.measured is None:
            return "ERROR"
        if self.target is None:
            return "-"
        if not comparable:
            return "n/c"
        met = self.measured >= self.target if self.at_least else self.measured <= self.target
        return "PASS" if met else "FAIL"

    def cells(self, comparable: bool) -> list[str]:
        measured = "n/a" if self.measured is None else f"{self.measured:{self.format}}"
        target = "-" if self.target is None else f"{'>=' if self.at_least else '<='} {self.target:g}"
        unit = f" {self.unit}" if self.unit else ""
        note = f" ({self.note})" if self.note else ""
        return [
            self.name,
            measured + (unit if self.measured is not None else "") + note,
            target + (unit if self.target is not None else ""),
            self.verdict(comparable),
        ]


class CommandFailed(RuntimeError):
    """A timed subprocess exited non-zero; the message holds its command and the tail of its output."""


# ---------------------------------------------------------------------------------------------
# Running commands


def postergenre_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "postergenre", "-q", *args]


def child_env(cache: Path) -> dict:
    """This worktree's package first, and the given feature/ONNX cache."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "POSTERGENRE_CACHE_DIR": str(cache)}


def timed_run(command: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, max RSS in MiB, stdout) of ``command``; raises CommandFailed with its output tail.

    os.wait4 gives this child's own resource usage, so the peak is the command's, not the
    largest of all children so far (which RUSAGE_CHILDREN would give).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise CommandFailed(f"exit {process.returncode}: {' '.join(command)}\n{tail}")
    return seconds, usage.ru_maxrss // 1024, stdout


# ---------------------------------------------------------------------------------------------
# The figures


def dataset_arguments(data: Path, quick: int | None, work: Path) -> list[str]:
    """DATA, or for --quick a CSV of the first N rows with a poster, beside the real images folder."""
    if quick is None:
        return [str(data)]
    from postergenre.data.dataset import load_dataset

    dataset = load_dataset(data)
    keep = set(dataset.ids[:quick])
    lines = Path(dataset.csv_path).read_text().splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0] in keep]
    subset = work / "quick.csv"
    subset.write_text("\n".join(rows) + "\n")
    return ["--csv", str(subset), "--images", str(dataset.images_dir)]


def pipeline_figures(dataset_args: list[str], work: Path) -> tuple[list[Figure], Path | None]:
    """Cold image-only and cold default (poster text) ``postergenre train``, warm default, test quality, peak memory.

    Each cold run starts from its own empty cache, so the default run pays for its image features too.
    """
    figures = []
    image_args = [*dataset_args, "--no-text"]
    image_run, _ = timed_train(
        figures, "image only (--no-text)", TARGET_COLD_S, image_args, work / "image-run", work / "image-cache"
    )
    if image_run is not None:
        figures += quality_figures(image_run, "image only", TARGET_AUC, TARGET_AP)
    cache = work / "cache"
    default_run, rss = timed_train(
        figures, "default (text auto)", TARGET_COLD_TEXT_S, dataset_args, work / "run", cache
    )
    if default_run is None:
        figures.append(Figure("warm default pipeline (cache kept, --split)", None, "s", TARGET_WARM_S, format=".1f"))
        return figures + missing_quality(), None
    figures.append(Figure("peak memory of the cold default train (max RSS)", rss, "MiB", format=".0f"))
    split = ["--split", str(default_run / "split.csv")]
    timed_train(
        figures, "default, warm (cache kept, --split)", TARGET_WARM_S, [*dataset_args, *split], work / "warm", cache
    )
    figures += quality_figures(default_run, "default", TARGET_AUC, TARGET_AP)
    figures += quality_figures(default_run, "default vs the text target", TARGET_TEXT_AUC, TARGET_TEXT_AP)
    figures += text_choice_figures(default_run)
    return figures, default_run


def ensemble_figures(dataset_args: list[str], work: Path, default_run: Path) -> list[Figure]:
    """The ensemble on the default run's split and cache: timed as it first runs (its backbones'
    features computed) and warm, and its test quality against the core and the text targets."""
    figures = []
    train_args = [*dataset_args, "--backbone", ENSEMBLE, "--split", str(default_run / "split.csv")]
    label = f"ensemble {ENSEMBLE}, first run (OCR cached, its backbones' features computed)"
    run, _ = timed_train(figures, label, None, train_args, work / "ensemble", work / "cache")
    if run is None:
        return figures
    timed_train(figures, "ensemble, warm (--split)", None, train_args, work / "ensemble-warm", work / "cache")
    figures += quality_figures(run, "ensemble", TARGET_AUC, TARGET_AP)
    figures += quality_figures(run, "ensemble vs the text target", TARGET_TEXT_AUC, TARGET_TEXT_AP)
    return figures


def timed_train(figures, label, target, train_args, run, cache) -> tuple[Path | None, int | None]:
    """Time ``postergenre train TRAIN_ARGS --out RUN`` with ``cache`` into figures; (RUN, max RSS) or (None, None)."""
    command = postergenre_command("train", *train_args, "--out", str(run))
    name = label if label.startswith("ensemble") else f"{'' if 'warm' in label else 'cold '}pipeline, {label}"
    try:
        seconds, rss, stdout = timed_run(command, child_env(cache))
    except CommandFailed as exc:
        print(f"{name} FAILED: {exc}")
        figures.append(Figure(name, None, "s", target, format=".1f"))
        return None, None
    print(f"{name}: {seconds:.1f} s, max RSS {rss} MiB\n" + indent(stdout))
    figures.append(Figure(name, seconds, "s", target, format=".1f"))
    return run, rss


def quality_figures(run: Path, label: str, target_auc: float, target_ap: float) -> list[Figure]:
    """Test macro ROC-AUC and AP from metrics.json, each beside the prevalence baseline."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {run / 'metrics.json'}: {exc}")
        return missing_quality()
    baseline = (metrics.get("baselines") or {}).get("prevalence") or {}
    n_genres = len(metrics.get("genres_in_macro") or [])
    figures = []
    for key, name, target in (
        ("macro_roc_auc", "test macro ROC-AUC", target_auc),
        ("macro_average_precision", "test macro AP", target_ap),
    ):
        reference = baseline.get(key)
        note = f"prevalence {reference:.3f}" if reference is not None else "no baseline"
        figures.append(Figure(f"{name}, {label}", metrics.get(key), target=target, at_least=True, note=note))
    print(f"quality ({label}): {metrics.get('n_samples', '?')} test posters, {n_genres} genres in the macro figures")
    return figures


def text_choice_figures(run: Path) -> list[Figure]:
    """The validation macro AUC of each text candidate the default run tried (no targets: validation figures)."""
    model = json.loads((run / "model.json").read_text())
    choice = model.get("text_choice") or {}
    print(f"text: chosen {choice.get('chosen')}; posters with text {choice.get('posters_with_text')}")
    return [
        Figure(f"validation macro AUC, {name}{' (chosen)' if name == choice.get('chosen') else ''}", v["macro_auc"])
        for name, v in (choice.get("validation") or {}).items()
    ]


def missing_quality() -> list[Figure]:
    return [
        Figure("test macro ROC-AUC", None, target=TARGET_AUC, at_least=True),
        Figure("test macro AP", None, target=TARGET_AP, at_least=True),
    ]


def throughput_figure(data: Path, n: int, work: Path) -> Figure:
    """End-to-end over forward-only images/s in one run, as benchmarks/feature_throughput.py measures it."""
    import numpy as np

    from postergenre.features import default_preprocessing, load_input
    from postergenre.models.backbones import create_backbone
    from postergenre.training.config import DEFAULT_BACKBONE

    paths = feature_throughput.load_poster_paths(data, n)
    preprocessing = default_preprocessing(DEFAULT_BACKBONE)
    backbone = create_backbone(DEFAULT_BACKBONE).eval()
    distinct = list(paths.values())[: feature_throughput.DISTINCT_INPUTS]
    inputs = np.stack([load_input(p, preprocessing) for p in distinct])
    cache = work / "throughput-cache"
    cache.mkdir()
    forward_rate = feature_throughput.onnx_forward_rate(cache, backbone, preprocessing, inputs, n, 32)
    n_posters, wall, inside = feature_throughput.timed_extraction(paths, DEFAULT_BACKBONE, preprocessing, False, cache)
    end_to_end = n_posters / wall
    print(
        f"throughput on {n_posters} posters: forward only {forward_rate:.1f} img/s, end to end {end_to_end:.1f} "
        f"img/s, {inside / wall:.0%} of end-to-end time inside forward"
    )
    note = f"{end_to_end:.1f} / {forward_rate:.1f} img/s"
    return Figure(
        "extraction end-to-end / forward-only", end_to_end / forward_rate, target=TARGET_RATIO, at_least=True, note=note
    )


def predict_figure(run: Path, cache: Path) -> Figure:
    """Median wall time of ``postergenre predict RUN POSTER`` in fresh processes, after one warm-up.

    Each timed call gets a poster no cache has seen (the test poster re-encoded: new bytes, the
    same picture and text), so a text model pays for its OCR and embedding as with a user's poster.
    """
    poster = test_poster(run)
    env = child_env(cache)
    try:
        timed_run(postergenre_command("predict", str(run), str(poster)), env)  # the OS file cache, warm
        times = [
            timed_run(postergenre_command("predict", str(run), str(copy)), env)[0]
            for copy in unseen_copies(poster, PREDICT_REPEATS, run.parent / "unseen")
        ]
    except CommandFailed as exc:
        print(f"predict FAILED: {exc}")
        return Figure("predict one poster, fresh process", None, "s", TARGET_PREDICT_S, format=".1f")
    print(f"predict {poster.name}: " + ", ".join(f"{t:.2f}" for t in times) + " s")
    return Figure(
        "predict one poster, fresh process",
        statistics.median(times),
        "s",
        TARGET_PREDICT_S,
        format=".2f",
        note=f"median of {PREDICT_REPEATS}",
    )


def unseen_copies(poster: Path, n: int, folder: Path) -> list[Path]:
    """``n`` copies of the poster, each re-encoded at another JPEG quality, so each has new bytes."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(poster).convert("RGB")
    copies = [folder / f"{poster.stem}-q{95 - k}.jpg" for k in range(n)]
    for k, copy in enumerate(copies):
        image.save(copy, quality=95 - k)
    return copies


def test_poster(run: Path) -> Path:
    """The poster file of the first test id of the run's split."""
    import pandas as pd

    config = json.loads((run / "config.json").read_text())
    split = pd.read_csv(run / "split.csv", index_col=0, dtype=str)
    first = split.index[split["split"] == "test"][0]
    return Path(config["dataset"]["images"]) / f"{first}.jpg"


# ---------------------------------------------------------------------------------------------
# Output


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines())


def print_table(figures: list[Figure], comparable: bool) -> None:
    rows = [["figure", "measured", "target", "verdict"]] + [f.cells(comparable) for f in figures]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for k, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: the shared movie-poster dataset)")
    parser.add_argument(
        "--quick",
        type=int,
        nargs="?",
        const=QUICK_DEFAULT,
        metavar="N",
        help=f"smoke run on the first N posters (default {QUICK_DEFAULT}); figures not comparable to targets",
    )
    parser.add_argument(
        "--throughput-n",
        type=int,
        default=1000,
        metavar="N",
        help="posters for the extraction throughput ratio (default 1000; --quick: at most 300)",
    )
    parser.add_argument("--no-ensemble", action="store_true", help=f"skip the ensemble {ENSEMBLE} (about 5 minutes)")
    parser.add_argument(
        "--work",
        type=Path,
        metavar="DIR",
        help="keep the runs and caches in DIR, which must be empty or absent (default: a temporary folder, removed)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    data = (args.data or feature_throughput.shared_dataset()).resolve()
    if not (data / "train.csv").is_file():
        print(f"skipped: no dataset at {data} (no train.csv); pass --data or set POSTERGENRE_SHARED_DATASET")
        return 0
    comparable = args.quick is None
    throughput_n = args.throughput_n if comparable else min(args.throughput_n, 300, args.quick)
    print(f"core targets on {data}{'' if comparable else f' (QUICK: first {args.quick} posters)'}; {load_text()}")

    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        print(f"--work {args.work}: expected an empty or absent folder, so that every cold run starts cold")
        return 2
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="core-targets-")))
        else:
            work = args.work.resolve()
            work.mkdir(parents=True, exist_ok=True)
        cache = work / "cache"
        dataset_args = dataset_arguments(data, args.quick, work)
        figures, run = pipeline_figures(dataset_args, work)
        if run is not None and not args.no_ensemble:
            figures += ensemble_figures(dataset_args, work, run)
        try:
            figures.append(throughput_figure(data, throughput_n, work))
        except Exception as exc:  # shown; the other figures are still printed
            print(f"throughput FAILED: {type(exc).__name__}: {exc}")
            figures.append(Figure("extraction end-to-end / forward-only", None, target=TARGET_RATIO, at_least=True))
        if run is not None:
            figures.append(predict_figure(run, cache))
        else:
            figures.append(Figure("predict one poster, fresh process", None, "s", TARGET_PREDICT_S, format=".1f"))

    print(f"\nafter the runs: {load_text()}")
    if not comparable:
        print(f"QUICK run on {args.quick} posters: figures are NOT comparable to the targets (n/c)")
    print_table(figures, comparable)
    verdicts = [f.verdict(comparable) for f in figures]
    return 1 if "ERROR" in verdicts or (comparable and "FAIL" in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
