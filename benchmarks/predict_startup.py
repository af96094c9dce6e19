"""Time ``postergenre predict RUN POSTER`` from a cold process, start-up included.

Usage:
    python benchmarks/predict_startup.py RUN POSTER [--repeat N]

Runs the command N times in fresh processes and prints the median wall time and the time to
import the CLI alone. Target: <= 2 s for one poster, start-up included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 2.0


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("poster")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    predict = [sys.executable, "-m", "postergenre", "predict", args.run, args.poster]
    help_only = [sys.executable, "-c", "import postergenre.cli"]
    wall_time(predict)  # warm the OS file cache once
    predict_times = [wall_time(predict) for _ in range(args.repeat)]
    import_times = [wall_time(help_only) for _ in range(args.repeat)]
    median = statistics.median(predict_times)
    print(f"import postergenre.cli: {statistics.median(import_times):.2f} s (median of {args.repeat})")
    print(f"postergenre predict, one poster: {median:.2f} s (median of {args.repeat}); target <= {TARGET_S:.1f} s")
    print("PASS" if median <= TARGET_S else "FAIL")


if __name__ == "__main__":
    main()
