"""CPU speed of backbone.forward() at batch 32, at each backbone's own input size.

    PYTHONPATH=. python benchmarks/backbone_forward.py [NAME ...] [--threads N] [--repeats R]

Prints images per second (median of R timed batches after one warm-up) and the time that
extracting features for the 7,242 posters of the real dataset would take at that speed. The
target is that feature extraction of the whole dataset stays within 10 minutes on a laptop CPU,
so that the usual workflow (extract once, train heads on cached features) is practical.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from postergenre.models.backbones import create_backbone

DATASET_POSTERS = 7242
TARGET_MINUTES = 10.0


def time_forward(name: str, batch_size: int, repeats: int) -> float:
    """Median seconds for one forward() of a batch."""
    backbone = create_backbone(name, pretrained=False).eval()
    images = torch.randn(batch_size, 3, *backbone.preprocessing.input_size)
    timings = []
    with torch.inference_mode():
        backbone(images)  # warm-up: allocator, kernel selection
        for _ in range(repeats):
            start = time.perf_counter()
            backbone(images)
            timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}")
    for name in args.names:
        seconds = time_forward(name, args.batch_size, args.repeats)
        rate = args.batch_size / seconds
        minutes = DATASET_POSTERS / rate / 60
        verdict = "ok" if minutes <= TARGET_MINUTES else "over target"
        print(
            f"{name:20s} {seconds * 1000:8.0f} ms/batch {rate:7.1f} images/s "
            f"dataset {minutes:5.1f} min (target <= {TARGET_MINUTES:.0f} min: {verdict})"
        )


if __name__ == "__main__":
    main()
