"""``postergenre analyze``: counts, co-occurrence, sizes and duplicates of a poster dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from postergenre.cli.common import add_dataset_arguments, load_dataset_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="describe a poster dataset: genre counts, co-occurrence, image sizes, duplicates",
        description="Scan every poster of a dataset and write analysis.json, PNG plots and one offline "
        "analysis.html: genre counts, genres per poster, genre co-occurrence, image sizes, byte-identical "
        "and near-identical posters, posters without labels and undecodable ones.",
    )
    add_dataset_arguments(parser)
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="analysis",
        type=Path,
        help="folder for analysis.json, the plots and analysis.html (default: ./analysis)",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="also read the labelled posters' text (offline OCR, cached; slow the first time) and report the "
        "words most typical of each genre; needs pip install 'postergenre[text]'",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from postergenre.analysis.report import write_report
    from postergenre.analysis.stats import analyze_dataset
    from postergenre.data.dataset import drop_images
    from postergenre.data.images import scan_images

    check_out_dir(args.out)
    if args.text:
        check_text_extra()
    # Dataset warnings are printed as they arise, through logging (PosterDataset.warn).
    dataset = load_dataset_from_args(args)

    all_paths = {**dataset.image_paths, **dataset.unlabelled_images}
    records = scan_images(all_paths, progress=not args.quiet)
    drop_images(dataset, {r.id: r.error for r in records if r.error is not None}, skip=args.skip_missing)

    ocr = read_poster_text(dataset, progress=not args.quiet) if args.text else None
    stats = analyze_dataset(dataset, records, ocr=ocr)
    if ocr is not None:
        stats["telling_words"]["ocr"] = {
            "settings": ocr_settings().to_dict(),
            "cached": ocr.n_cached,
            "read_now": ocr.n_computed,
        }
    files = write_report(stats, all_paths, args.out)

    print_summary(stats, files.html)
    return 0


def check_out_dir(out: Path) -> None:
    """Fail before the scan, not after it, when the output folder cannot be one."""
    from postergenre.errors import PosterGenreError

    if out.exists() and not out.is_dir():
        raise PosterGenreError(f"{out}: exists and is not a folder; pass --out DIR naming a folder for the report")


def check_text_extra() -> None:
    """Fail before the scan, not after it, when --text cannot be honoured."""
    from postergenre.errors import PosterGenreError
    from postergenre.text.ocr import package_version

    try:
        package_version()
    except ImportError as exc:
        raise PosterGenreError(
            "--text reads the posters' text with offline OCR, which needs the text extra; install it with: "
            "pip install 'postergenre[text]', or analyze without --text"
        ) from exc


def ocr_settings():
    # Training reads poster text with the default settings too, so either one's cache serves the other.
    from postergenre.text.ocr import OcrSettings

    return OcrSettings()


def read_poster_text(dataset, *, progress: bool):
    """OCR results of the labelled posters (unlabelled ones count for no genre), cached per poster."""
    from postergenre.text.ocr import ocr_posters

    return ocr_posters(dataset.image_paths, settings=ocr_settings(), progress=progress)


def print_summary(stats: dict, html_path: Path) -> None:
    unlabelled = stats["images_without_labels"]["count"]
    undecodable = stats["undecodable_posters"]
    top = ", ".join(f"{g} {n:,}" for g, n in list(stats["genre_counts"].items())[:3])
    print(f"wrote {html_path} (numbers in {html_path.with_name('analysis.json')})")
    print(f"  {stats['rows']:,} CSV rows, {stats['unique_ids']:,} unique ids, {stats['duplicate_rows']} duplicate rows")
    print(f"  {stats['images']:,} poster files, {unlabelled:,} without labels, {len(undecodable)} undecodable")
    print(
        f"  {len(stats['identical_poster_groups'])} byte-identical poster groups, "
        f"{len(stats['near_identical_pairs'])} near-identical pairs"
    )
    print(f"  {len(stats['genres'])} genres, most frequent: {top}")
    dropped = stats["genres_left_out"]["dropped"]
    if dropped:
        print(f"  left out of training by default: {', '.join(dropped)}")
    unlabelled_bad = [u["id"] for u in undecodable if not u["labelled"]]
    if unlabelled_bad:
        print(f"  undecodable posters without labels (ignored): {', '.join(unlabelled_bad[:5])}")
    words = stats.get("telling_words")
    if words:
        ocr = words["ocr"]
        print(
            f"  text of {words['posters_read']:,} posters ({ocr['cached']:,} cached, {ocr['read_now']:,} read now), "
            f"{words['posters_with_text']:,} with text"
        )
        tops = [f"{g} {e['words'][0]['word']}" for g, e in words["genres"].items() if e["words"]]
        if tops:
            print(f"  most telling word per genre: {', '.join(tops[:6])}{', ...' if len(tops) > 6 else ''}")
        else:
            print(f"  no telling words: {words['warnings'][0] if words['warnings'] else 'no genre has one'}")
    if stats["warnings"]:
        n = len(stats["warnings"])
        print(f"  {n} dataset warning{'s' if n > 1 else ''} (shown above and in the report)")
