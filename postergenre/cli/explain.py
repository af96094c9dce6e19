"""``postergenre explain RUN IMAGE``: where on the poster the model found each genre (Grad-CAM)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TOP = 3


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain",
        help="show where on a poster the model sees each genre (Grad-CAM heatmaps)",
        description="Draw Grad-CAM heatmaps (Selvaraju et al. 2017) over a poster: for each genre, where the "
        "evidence for it lies according to the run's model, at the backbone's last convolutional stage, with the "
        "genre's probability and threshold. One panel per genre, in one picture. For a model that reads poster "
        "text, the text it read (OCR, cached) is outlined on every panel and listed in the caption.",
    )
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (the --out of postergenre train)")
    parser.add_argument("image", metavar="IMAGE", type=Path, help="poster image file")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--genre",
        metavar="G",
        action="append",
        help="a genre to explain, by name; repeat for several (--genre Drama --genre Horror)",
    )
    which.add_argument(
        "--top",
        metavar="K",
        type=int,
        default=DEFAULT_TOP,
        help=f"explain the K most probable genres (default: {DEFAULT_TOP})",
    )
    parser.add_argument(
        "--out", metavar="FILE", type=Path, help="picture to write (default: ./<image stem>_explain.png)"
    )
    parser.add_argument(
        "--no-text-boxes",
        dest="text_boxes",
        action="store_false",
        help="for a model that reads poster text: leave out the outlines and the list of the lines it read "
        "(the poster is read all the same: the model needs its text)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from postergenre.explain.choices import prefer_passive_threads

    prefer_passive_threads()  # before torch is imported
    from postergenre.explain import choices, render
    from postergenre.explain.gradcam import explain_image, text_read

    choices.freeze_imported_objects()
    out = choices.check_out(args.out or choices.default_out(args.image.stem, "explain"))
    image = choices.open_poster(args.image)
    classifier = choices.load_run(args.run_dir)
    indices = choices.genre_indices(classifier.genres, args.genre) if args.genre else None
    # A text model's fixed text input, read even without boxes; [] for an image model.
    lines = classifier.read_poster_text(args.image)
    text_lines = text_read(classifier, lines) if args.text_boxes else None

    explanation = explain_image(classifier, image, indices, top=args.top)
    title = f"{args.image.name} - model {classifier.name}"
    render.save(render.explanation_figure(image, explanation, title=title, text_lines=text_lines), out)

    print_explanation(explanation)
    if text_lines is not None:
        print_text_lines(text_lines)
    print(f"wrote {out}")
    return 0


def print_explanation(explanation) -> None:
    print(explanation.caption)
    width = max(len(cam.genre) for cam in explanation.cams)
    for cam in explanation.cams:
        decision = "predicted" if cam.predicted else "not predicted"
        print(f"  {cam.genre:<{width}}  probability {cam.probability:.3f}  threshold {cam.threshold:.3f}  {decision}")


def print_text_lines(lines: list) -> None:
    """The lines the model read, numbered as their boxes on the picture."""
    from postergenre.explain import render

    if not lines:
        print(render.NO_TEXT)
        return
    print("text read (OCR), as outlined on the poster:")
    for number, line in enumerate(lines, start=1):
        print(f"  {number:>2}  {line.text}  (confidence {line.confidence:.2f})")
