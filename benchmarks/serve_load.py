"""Load on ``postergenre serve``: latency percentiles and errors for 1 and 8 concurrent clients.

Usage:
    python benchmarks/serve_load.py [RUN | --backbone NAME] [--requests N] [--clients 1 8] [--posters DIR]

Starts ``postergenre serve RUN --port 0`` on loopback in its own process, then for each client
count runs that many threads, each posting N posters to ``/api/predict`` one after the other (its
own HTTP connection), and prints p50/p95/p99 of the round-trip latency, the throughput and the
errors. Without RUN a run is built with a random head, on ``--backbone NAME`` (a registered
backbone with its bundled weights, exported to ONNX: realistic latency) or else on a stand-in
backbone (a mean colour per image quarter): the service's own cost (upload, decoding, JSON,
threads) without a network.
Targets: p50 <= 50 ms with one client; no error with 8 clients at once.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_P50_MS = 50.0
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
START_TIMEOUT_S = 120


def build_run(folder: Path, backbone: str | None) -> Path:
    """A run folder with a random linear head, over a registered backbone (its bundled weights, in ONNX)
    or, without one, over a stand-in backbone: the mean colour of each image quarter (12 numbers)."""
    import torch

    import postergenre
    from postergenre.training.heads import create_head
    from postergenre.training.run import save_model

    folder.mkdir(parents=True)
    if backbone is None:
        preprocessing, num_features = write_stand_in_onnx(folder / "backbone.onnx")
    else:
        preprocessing, num_features = write_backbone_onnx(backbone, folder / "backbone.onnx")
    torch.manual_seed(0)
    head = create_head("linear", num_features, len(GENRES))
    head.set_standardisation(np.random.default_rng(0).normal(0, 0.3, size=(50, num_features)))
    info = {
        "name": f"random-head-{backbone or 'stand-in'}",
        "mode": "multilabel",
        "head": head.describe(),
        "backbone": backbone or "stand-in",
        "preprocessing": preprocessing.to_dict(),
        "flip": False,
        "genres": GENRES,
        "thresholds": [0.5] * len(GENRES),
        "train_prevalence": [0.2] * len(GENRES),
        "postergenre_version": postergenre.__version__,
    }
    save_model(folder, head, info)
    return folder


def write_stand_in_onnx(path: Path):
    import onnx
    from onnx import TensorProto, helper

    from postergenre.models.preprocessing import Preprocessing

    size = 224
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[size // 2] * 2, strides=[size // 2] * 2),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "stand_in_backbone",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 12])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Preprocessing((size, size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize="stretch"), 12


def write_backbone_onnx(name: str, path: Path):
    import warnings

    import torch

    from postergenre.models.backbones import create_backbone

    backbone = create_backbone(name).eval()
    preprocessing = backbone.preprocessing
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            backbone,
            torch.zeros(1, 3, *preprocessing.input_size),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["features"],
            dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
        )
    return preprocessing, backbone.num_features


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    """``postergenre serve RUN --port 0`` in a child process; its URL once it answers /healthz."""
    import httpx

    command = [sys.executable, "-m", "postergenre", "-q", "serve", str(run), "--port", "0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"at (http://[^ ]+/) ", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    url = match.group(1)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "healthz", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server at {url} did not answer /healthz within {START_TIMEOUT_S} s")


def client_loop(url: str, posters: list[tuple[str, bytes]], n_requests: int, offset: int, out: dict) -> None:
    """One client: ``n_requests`` predictions in a row on one connection; latencies (s) and errors into ``out``."""
    import httpx

    latencies, errors = [], []
    with httpx.Client(base_url=url, timeout=60) as client:
        for k in range(n_requests):
            name, data = posters[(offset + k) % len(posters)]
            start = time.perf_counter()
            try:
                response = client.post("api/predict", files={"file": (name, data, "image/jpeg")})
                ok = response.status_code == 200 and len(response.json()["genres"]) > 0
                if not ok:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - start)
    out["latencies"], out["errors"] = latencies, errors


def load(url: str, posters: list[tuple[str, bytes]], n_clients: int, n_requests: int) -> dict:
    """Run ``n_clients`` client threads at once; pooled latencies (ms), errors and requests per second."""
    results = [{} for _ in range(n_clients)]
    threads = [
        threading.Thread(target=client_loop, args=(url, posters, n_requests, 7 * k, results[k]))
        for k in range(n_clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies = np.array([t for r in results for t in r["latencies"]]) * 1000
    errors = [e for r in results for e in r["errors"]]
    return {"latencies_ms": latencies, "errors": errors, "per_second": len(latencies) / elapsed}


def read_posters(folder: Path | None) -> list[tuple[str, bytes]]:
    if folder is None:
        from postergenre.data.demo import demo_dataset_root

        folder = demo_dataset_root() / "images"
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[:64]
    if not paths:
        raise SystemExit(f"{folder}: no poster images (JPEG, PNG or WebP) in it")
    return [(p.name, p.read_bytes()) for p in paths]


def report(n_clients: int, result: dict) -> None:
    p50, p95, p99 = np.percentile(result["latencies_ms"], [50, 95, 99])
    print(
        f"{n_clients:>2} client(s): {len(result['latencies_ms'])} requests, p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms, {result['per_second']:.1f} requests/s, errors {len(result['errors'])}"
    )
    for error in result["errors"][:3]:
        print(f"    error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run folder (default: one built with a random head)")
    parser.add_argument(
        "--backbone", metavar="NAME", help="without RUN: build the run on this registered backbone (default: stand-in)"
    )
    parser.add_argument("--requests", type=int, default=50, metavar="N", help="requests per client (default: 50)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="client counts (default: 1 8)")
    parser.add_argument("--posters", type=Path, help="folder of posters to send (default: the demo posters)")
    args = parser.parse_args()

    posters = read_posters(args.posters)
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or build_run(Path(scratch) / "run", args.backbone)
        if args.run is not None:
            what = str(run)
        elif args.backbone:
            what = f"{args.backbone} (bundled weights, random head)"
        else:
            what = "a stand-in backbone (the service's own overhead, no network)"
        print(f"serving {what}; {len(posters)} posters, {args.requests} requests per client, loopback")
        process, url = start_server(run)
        try:
            load(url, posters, 1, min(5, args.requests))  # warm-up: first connections, caches
            results = {n: load(url, posters, n, args.requests) for n in args.clients}
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    for n, result in results.items():
        report(n, result)
    if 1 in results:
        p50 = float(np.percentile(results[1]["latencies_ms"], 50))
        verdict = "PASS" if p50 <= TARGET_P50_MS else "FAIL"
        print(f"one client: p50 {p50:.1f} ms; target <= {TARGET_P50_MS:.0f} ms: {verdict}")
    if 8 in results:
        n_errors = len(results[8]["errors"])
        print(f"8 clients: {n_errors} errors; target 0: {'PASS' if n_errors == 0 else 'FAIL'}")


if __name__ == "__main__":
    main()
