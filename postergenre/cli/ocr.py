"""``postergenre ocr``: the text on every poster, with boxes and confidences, as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys

from postergenre.cli.common import add_dataset_arguments, load_dataset_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ocr",
        help="read the text on every poster (cached)",
        description="Read the text on every poster of a dataset and write one JSON line per poster: "
        '{"id": ..., "lines": [{"text", "confidence", "box"}]}, boxes as four corners in poster pixels. '
        "Results are cached, so a second run reads them back.",
    )
    add_dataset_arguments(parser)
    parser.add_argument(
        "--out", metavar="FILE.jsonl", default="ocr.jsonl", help="where to write (default: %(default)s; - for stdout)"
    )
    parser.add_argument("--workers", type=int, metavar="N", help="OCR processes (default: one per core)")
    parser.add_argument(
        "--preset",
        choices=["fast", "reference"],
        default="fast",
        help="fast (default) or reference: the OCR package's own slower, more thorough pipeline",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from postergenre.text.ocr import PRESETS, ocr_posters

    if args.workers is not None and args.workers < 1:
        raise _error(f"--workers must be at least 1, got {args.workers}")
    dataset = load_dataset_from_args(args)
    posters = {**dataset.image_paths, **dataset.unlabelled_images}

    results = ocr_posters(posters, settings=PRESETS[args.preset], workers=args.workers, progress=not args.quiet)

    write_jsonl(results, args.out)
    with_text = sum(bool(lines) for lines in results.values())
    where = "stdout" if args.out == "-" else args.out
    print(
        f"OCR of {len(results)} posters: {results.n_cached} cached, {results.n_computed} computed; "
        f"{with_text} with text; wrote {where}",
        file=sys.stderr if args.out == "-" else sys.stdout,
    )
    return 0


def write_jsonl(results: dict, out: str) -> None:
    lines = (
        json.dumps(
            {
                "id": id_,
                "lines": [{"text": t.text, "confidence": t.confidence, "box": [list(p) for p in t.box]} for t in found],
            },
            ensure_ascii=False,
        )
        + "\n"
        for id_, found in results.items()
    )
    if out == "-":
        sys.stdout.writelines(lines)
        return
    with open(out, "w", encoding="utf-8") as handle:
        handle.writelines(lines)


def _error(message: str):
    from postergenre.errors import PosterGenreError

    return PosterGenreError(message)
