"""Time ``postergenre analyze`` on the full shared dataset (7,867 posters) against its target.

    python benchmarks/analyze_speed.py

Runs the whole command in a fresh process, as a user would (imports, scan, plots, page), and
prints the wall time beside the target. Skips with a message where the shared dataset is absent
(it is looked for in ../shared/datasets/movie-posters, or set POSTERGENRE_SHARED_DATASET).
Exits 1 if the target is missed. Timings on a loaded machine are noisy: run it twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0


def shared_dataset() -> Path:
    default = ROOT.parent / "shared" / "datasets" / "movie-posters"
    return Path(os.environ.get("POSTERGENRE_SHARED_DATASET", default)).resolve()


def time_analyze(data: Path, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "postergenre", "-q", "analyze", str(data), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    data = shared_dataset()
    if not (data / "train.csv").is_file():
        print(f"skipped: the shared dataset is absent (looked in {data}); set POSTERGENRE_SHARED_DATASET")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        seconds = time_analyze(data, Path(tmp))
        stats = json.loads((Path(tmp) / "analysis.json").read_text())
    verdict = "ok" if seconds < TARGET_SECONDS else "MISSED"
    print(
        f"postergenre analyze on {stats['images']:,} posters ({os.cpu_count()} CPUs): "
        f"{seconds:.1f} s (target < {TARGET_SECONDS:.0f} s) {verdict}"
    )
    return 0 if seconds < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
