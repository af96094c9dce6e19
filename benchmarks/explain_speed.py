"""Time ``postergenre explain RUN poster.jpg --top 3`` from a cold start against its target (3 s).

    python benchmarks/explain_speed.py [RUN] [--backbone NAME] [--poster FILE]

With a RUN folder (and the training package that loads it), the whole command is timed in a fresh
process, as a user would run it. Without one, a fresh process runs the same path the command
runs, step by step, on a stand-in model (a registered backbone with its bundled weights and a
random 7-genre head), so every cost but reading the head from disk is counted: Python and torch
start-up, building the backbone and loading its weights, preprocessing, one forward pass, three
backward passes, drawing and writing the PNG. The torch import alone is timed too.

Exits 1 if the target is missed. Timings on a loaded machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 3.0
DEFAULT_POSTER = ROOT / "postergenre" / "data" / "demo" / "images" / "tt0087197.jpg"

# Run in a fresh interpreter: the command's own steps, each timed, printed as JSON.
CORE_PATH = """
import json, sys, time
start = time.perf_counter()
marks = {}
from postergenre.explain.choices import prefer_passive_threads
prefer_passive_threads()
import torch
marks["import torch"] = time.perf_counter()
from postergenre.explain import choices, render
from postergenre.explain.classifier import classifier_from_parts
from postergenre.explain.gradcam import explain_image
from postergenre.models.backbones import create_backbone
choices.freeze_imported_objects()
marks["import postergenre"] = time.perf_counter()
image = choices.open_poster(sys.argv[2])
marks["read poster"] = time.perf_counter()
backbone = create_backbone(sys.argv[1])
torch.manual_seed(0)
classifier = classifier_from_parts(backbone, torch.nn.Linear(backbone.num_features, 7), list("ABCDEFG"))
marks["build backbone + load weights"] = time.perf_counter()
explanation = explain_image(classifier, image, top=3)
marks["forward + 3 backward + maps"] = time.perf_counter()
render.save(render.explanation_figure(image, explanation, title="benchmark"), sys.argv[3])
marks["draw + write PNG"] = time.perf_counter()
print(json.dumps({"start": start, "marks": marks}))
"""


def environment() -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def time_torch_import() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], env=environment(), check=True)
    return time.perf_counter() - start


def time_core_path(backbone: str, poster: Path, out: Path) -> tuple[float, dict]:
    """Wall time of the whole fresh process, and the seconds each step took inside it."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CORE_PATH, backbone, str(poster), str(out)],
        env=environment(),
        check=True,
        capture_output=True,
        text=True,
    )
    total = time.perf_counter() - start
    timings = json.loads(result.stdout.strip().splitlines()[-1])
    previous, steps = timings["start"], {}
    for name, mark in timings["marks"].items():
        steps[name] = mark - previous
        previous = mark
    return total, steps


def time_command(run: Path, poster: Path, out: Path) -> float:
    command = [sys.executable, "-m", "postergenre", "-q", "explain", str(run), str(poster), "--top", "3"]
    start = time.perf_counter()
    subprocess.run([*command, "--out", str(out)], env=environment(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def verdict(seconds: float) -> str:
    return f"{seconds:.2f} s (target <= {TARGET_SECONDS:.0f} s) {'ok' if seconds <= TARGET_SECONDS else 'MISSED'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run folder, to time the real command")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="stand-in model's backbone without RUN")
    parser.add_argument("--poster", type=Path, default=DEFAULT_POSTER)
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPUs; import torch alone, fresh process: {time_torch_import():.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "explain.png"
        if args.run is not None:
            seconds = time_command(args.run, args.poster, out)
            print(f"postergenre explain {args.run} {args.poster.name} --top 3: {verdict(seconds)}")
        else:
            seconds, steps = time_core_path(args.backbone, args.poster, out)
            for name, step in steps.items():
                print(f"  {name:<32} {step:6.2f} s")
            print(f"explain --top 3 path on {args.backbone} (stand-in head), fresh process: {verdict(seconds)}")
            print(f"  of which everything but importing torch: {seconds - steps['import torch']:.2f} s")
    return 0 if seconds <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
