"""``postergenre predict``: genres for poster images with a trained run (no torch: ONNX Runtime)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("table", "json", "csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict genres for poster images with a trained run",
        description="Score poster images (files or folders of them) with a run folder's model. Shows the "
        "genres at or above their tuned thresholds and the top-K probabilities. Images that cannot be "
        "read are reported on stderr and skipped.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="run folder written by postergenre train")
    parser.add_argument("images", nargs="+", metavar="IMAGE|FOLDER", help="poster files or folders of posters")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: %(default)s)")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="show the K most probable genres (default: 3)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="posters per backbone batch")
    parser.set_defaults(run=run)


def expand_paths(items: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given and the images inside folders (sorted); plus the items that are neither."""
    paths, missing = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif path.is_file():
            paths.append(path)
        else:
            missing.append(item)
    return paths, missing


def run(args: argparse.Namespace) -> int:
    from postergenre.errors import PosterGenreError
    from postergenre.inference.predictor import Predictor

    if args.top < 0:
        raise PosterGenreError(f"--top must be 0 or more, got {args.top}")
    paths, missing = expand_paths(args.images)
    for item in missing:
        print(f"skipped: {item}: no such file or folder", file=sys.stderr)
    predictor = Predictor.load(args.run_dir)
    progress = len(paths) > args.batch_size and not args.quiet
    scores = predictor.score_paths(paths, batch_size=args.batch_size, progress=progress)
    for reason in scores.failed.values():
        print(f"skipped: {reason}", file=sys.stderr)
    if not scores.paths:
        raise PosterGenreError("no image could be scored; give JPEG, PNG or WebP posters")
    if predictor.uses_text and not args.quiet:
        print(timing_line(scores.timings, len(scores.paths)), file=sys.stderr)
    rows = prediction_rows(scores, predictor.genres, args.top)
    sys.stdout.write(FORMATTERS[args.format](rows, predictor.genres))
    return 0


def timing_line(timings: dict, n_posters: int) -> str:
    """Where a text model's time went, per poster: OCR (with text features) and the image part."""
    return (
        f"timings: OCR and text {timings.get('ocr', 0):.1f} ms/poster ({timings.get('ocr_cached', 0)} of "
        f"{n_posters} cached), image {timings.get('image', 0):.1f} ms/poster"
    )


def prediction_rows(scores, genres: list[str], top: int) -> list[dict]:
    """One dict per image: the predicted genres, the top-K (genre, probability) and every probability."""
    rows = []
    for image, values, predicted in zip(scores.paths, scores.probabilities, scores.predicted, strict=True):
        probabilities = {g: float(p) for g, p in zip(genres, values, strict=True)}
        ranked = sorted(probabilities.items(), key=lambda item: -item[1])[:top]
        rows.append({"image": image, "genres": predicted, "top": ranked, "probabilities": probabilities})
    return rows


def format_table(rows: list[dict], genres: list[str]) -> str:
    width = max(len(Path(r["image"]).name) for r in rows)
    lines = [f"{'image':<{width}}  {'genres':<30}  top"]
    for r in rows:
        top = ", ".join(f"{g} {p:.2f}" for g, p in r["top"])
        lines.append(f"{Path(r['image']).name:<{width}}  {', '.join(r['genres']) or '-':<30}  {top}")
    return "\n".join(lines) + "\n"


def format_json(rows: list[dict], genres: list[str]) -> str:
    import json

    out = [
        {
            "image": r["image"],
            "genres": r["genres"],
            "top": [{"genre": g, "probability": round(p, 6)} for g, p in r["top"]],
            "probabilities": {g: round(p, 6) for g, p in r["probabilities"].items()},
        }
        for r in rows
    ]
    return json.dumps(out, indent=2) + "\n"


def format_csv(rows: list[dict], genres: list[str]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "genres", *genres])
    for r in rows:
        writer.writerow([r["image"], ";".join(r["genres"]), *(f"{r['probabilities'][g]:.6f}" for g in genres)])
    return buffer.getvalue()


FORMATTERS = {"table": format_table, "json": format_json, "csv": format_csv}
