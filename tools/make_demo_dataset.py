"""Rebuild the built-in demo dataset from the full poster dataset.

    python tools/make_demo_dataset.py ../shared/datasets/movie-posters

Picks a few hundred labelled posters so that the common genres each have a couple of dozen
positives, keeps the dataset's quirks on a small scale (one duplicate CSV row, byte-identical
posters under two ids, a near-identical pair, a few posters without a row), and writes 200 px
high JPEG thumbnails into ``postergenre/data/demo``.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from PIL import Image

DEMO = Path(__file__).resolve().parents[1] / "postergenre" / "data" / "demo"
THUMBNAIL_HEIGHT = 200
N_LABELLED = 280
N_UNLABELLED = 10
MIN_POSITIVES = 25
# Quirks of the full dataset that the demo keeps: identical posters under different ids, a
# near-identical pair (one of which is also a duplicated CSV row).
KEEP = ["tt0372763", "tt0436070", "tt0402577", "tt0420286", "tt2546300", "tt2546294"]
SKIP_GENRES = {"N/A", "Reality-TV", "News", "Short"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with open(args.source / "train.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    genres = header[2:]
    by_id = {}
    for row in rows:
        by_id.setdefault(row[0], row)
    ids = sorted(by_id)
    rng.shuffle(ids)

    chosen = [i for i in KEEP if i in by_id]
    counts = dict.fromkeys(genres, 0)
    for i in chosen:
        _count(by_id[i], genres, counts)
    # Rarest genres first, so that they reach MIN_POSITIVES before the sample is full.
    totals = {g: sum(by_id[i][2 + k] == "1" for i in ids) for k, g in enumerate(genres)}
    for genre in sorted((g for g in genres if g not in SKIP_GENRES), key=totals.get):
        k = genres.index(genre)
        for i in ids:
            if counts[genre] >= MIN_POSITIVES or len(chosen) >= N_LABELLED:
                break
            if i not in chosen and by_id[i][2 + k] == "1":
                chosen.append(i)
                _count(by_id[i], genres, counts)
    for i in ids:
        if len(chosen) >= N_LABELLED:
            break
        if i not in chosen:
            chosen.append(i)
            _count(by_id[i], genres, counts)

    chosen_set = set(chosen)
    out_rows = [row for row in rows if row[0] in chosen_set]  # keeps the duplicated row
    labelled = {row[0] for row in rows}
    unlabelled = sorted(p.stem for p in (args.source / "images").glob("*.jpg") if p.stem not in labelled)
    extra = [i for i in KEEP if i not in labelled]
    extra += rng.sample([i for i in unlabelled if i not in extra], N_UNLABELLED - len(extra))

    images = DEMO / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.jpg"):
        old.unlink()
    with open(DEMO / "train.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(out_rows)
    for i in sorted(chosen_set | set(extra)):
        with Image.open(args.source / "images" / f"{i}.jpg") as image:
            image = image.convert("RGB")
            width = round(image.width * THUMBNAIL_HEIGHT / image.height)
            image.resize((width, THUMBNAIL_HEIGHT), Image.Resampling.LANCZOS).save(
                images / f"{i}.jpg", quality=75, optimize=True
            )
    print(f"{len(out_rows)} rows, {len(chosen_set)} labelled ids, {len(extra)} unlabelled posters")
    print({g: c for g, c in counts.items()})


def _count(row: list[str], genres: list[str], counts: dict[str, int]) -> None:
    for k, g in enumerate(genres):
        counts[g] += row[2 + k] == "1"


if __name__ == "__main__":
    main()
