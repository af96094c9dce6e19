"""Writing the analysis: ``analysis.json``, PNG plots and one self-contained ``analysis.html``.

The HTML page embeds every image as a base64 data URI and carries its own CSS, so it opens
offline and can be mailed as a single file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path

from postergenre.analysis import plots

logger = logging.getLogger(__name__)

# Thumbnails are decoded at a reduced JPEG scale (Image.draft), so they cost little even for
# large posters.
GRID_THUMBNAIL = (150, 225)
PAGE_THUMBNAIL = (120, 180)
# Near-identical pairs shown with thumbnails on the page; the JSON lists all of them.
MAX_PAIRS_SHOWN = 40

PLOT_FILES = {
    "genre_counts": "genre_counts.png",
    "cooccurrence": "cooccurrence.png",
    "labels_per_poster": "labels_per_poster.png",
    "image_sizes": "image_sizes.png",
    "sample_posters": "sample_posters.png",
}
# Drawn only when the analysis read the posters' text (analyze --text).
TELLING_WORDS_FILE = "telling_words.png"
TEXT_HINT = (
    "postergenre analyze DATA --text reads the posters' text (offline OCR, cached) and adds this section; "
    "it needs the text extra: pip install 'postergenre[text]'"
)


@dataclass
class ReportFiles:
    json: Path
    html: Path
    plots: dict[str, Path]


def write_report(stats: dict, image_paths: dict[str, Path], out_dir: str | Path) -> ReportFiles:
    """Write ``analysis.json``, the PNG plots and ``analysis.html`` into ``out_dir``.

    Args:
        stats: the dict from :func:`postergenre.analysis.stats.analyze_dataset`.
        image_paths: poster files by id, labelled and unlabelled, for the thumbnails.
        out_dir: the folder to write into; created if needed, files in it are replaced.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "analysis.json"
    json_path.write_text(json.dumps(stats, indent=2) + "\n")

    plot_paths = draw_plots(stats, image_paths, out_dir)

    html_path = out_dir / "analysis.html"
    html_path.write_text(render_html(stats, image_paths, plot_paths), encoding="utf-8")
    logger.info("wrote %s", html_path)
    return ReportFiles(json_path, html_path, plot_paths)


# ---- images -----------------------------------------------------------------------------------


def load_thumbnail(path: Path, size: tuple[int, int] = GRID_THUMBNAIL):
    """A small RGB copy of a poster, or None if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale, several times faster than in full.
            image.draft("RGB", size)
            thumb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    thumb.thumbnail(size)
    return thumb


def _placeholder(size: tuple[int, int]):
    from PIL import Image

    return Image.new("RGB", (size[0] * 2 // 3, size[1] * 2 // 3), (220, 220, 220))


def data_uri(image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def file_data_uri(path: Path) -> str:
    return f"data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


# ---- plots ------------------------------------------------------------------------------------


def draw_plots(stats: dict, image_paths: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    """Draw every plot from the stats and save it as a PNG; returns the paths by plot name."""
    import matplotlib

    paths = {name: out_dir / file for name, file in PLOT_FILES.items()}
    words = stats.get("telling_words")
    if words and any(entry["words"] for entry in words["genres"].values()):
        paths["telling_words"] = out_dir / TELLING_WORDS_FILE
    else:
        (out_dir / TELLING_WORDS_FILE).unlink(missing_ok=True)  # an earlier analysis's, which this one contradicts
    with matplotlib.rc_context(plots.STYLE):
        _draw_each_plot(stats, image_paths, paths)
    return paths


def _draw_each_plot(stats: dict, image_paths: dict[str, Path], paths: dict[str, Path]) -> None:
    plots.save(plots.genre_counts(stats["genre_counts"], total=stats["rows"]), paths["genre_counts"])
    plots.save(plots.cooccurrence_heatmap(stats["genres"], stats["cooccurrence"]), paths["cooccurrence"])
    plots.save(plots.labels_per_poster(stats["labels_per_poster"]), paths["labels_per_poster"])
    _draw_image_sizes(stats["image_sizes"]["all_sizes"], paths["image_sizes"])
    _draw_sample_grid(stats["sample_posters"], image_paths, paths["sample_posters"])
    if "telling_words" in paths:
        # Most frequent genre first, as in the genre counts plot.
        genres = stats["telling_words"]["genres"]
        ordered = {g: genres[g] for g in stats["genre_counts"] if g in genres}
        plots.save(plots.telling_words_grid(ordered), paths["telling_words"])


def _draw_image_sizes(all_sizes: list[list[int]], path: Path) -> None:
    left, right = plots.new_axes((12, 4.8), ncols=2)
    plots.image_sizes(all_sizes, ax=left)
    plots.aspect_ratios(all_sizes, ax=right)
    plots.save(left, path)


def _draw_sample_grid(samples: list[dict], image_paths: dict[str, Path], path: Path) -> None:
    thumbnails, captions = [], []
    for sample in samples:
        thumb = load_thumbnail(image_paths[sample["id"]]) if sample["id"] in image_paths else None
        thumbnails.append(thumb or _placeholder(GRID_THUMBNAIL))
        captions.append(_caption(sample["id"], sample["genres"]))
    plots.save(plots.poster_grid(thumbnails, captions, cell=GRID_THUMBNAIL), path)


def _caption(id_: str, genres: list[str], width: int = 24) -> str:
    lines = textwrap.wrap(", ".join(genres) or "(no genre)", width) or [""]
    return "\n".join([id_, *lines[:2]])


# ---- HTML -------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #222;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #3b6ea5; padding-bottom: 4px; margin-top: 40px; }
.sub { color: #666; margin-top: 0; font-size: 14px; }
.headline { display: flex; flex-wrap: wrap; gap: 12px; margin: 20px 0; }
.card { background: #eef3f9; border-radius: 8px; padding: 10px 16px; min-width: 120px; }
.card b { display: block; font-size: 26px; color: #23476f; } .card span { font-size: 13px; color: #555; }
.warn { background: #fff4e0; border-left: 5px solid #e69b00; padding: 8px 14px; margin: 8px 0; font-size: 14px; }
table { border-collapse: collapse; font-size: 14px; margin: 12px 0; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; } th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.plot { max-width: 100%; height: auto; display: block; margin: 12px 0; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.group { display: flex; gap: 10px; align-items: flex-end; padding: 10px; margin: 8px 0; background: #fafafa;
         border: 1px solid #e3e3e3; border-radius: 6px; flex-wrap: wrap; }
figure { margin: 0; text-align: center; font-size: 12px; max-width: 140px; }
figure img { display: block; margin: 0 auto 4px; border: 1px solid #ccc; }
.dist { align-self: center; font-size: 13px; color: #555; }
details { margin: 12px 0; } summary { cursor: pointer; color: #23476f; }
.matrix td, .matrix th { padding: 2px 5px; font-size: 12px; }
code { background: #f0f0f0; padding: 0 4px; border-radius: 3px; }
"""


def render_html(stats: dict, image_paths: dict[str, Path], plot_paths: dict[str, Path]) -> str:
    """The whole report page as one string."""
    sections = [
        _header(stats),
        _warnings_section(stats),
        _genres_section(stats, plot_paths),
        _labels_section(stats, plot_paths),
        _cooccurrence_section(stats, plot_paths),
        _sizes_section(stats, plot_paths),
        _duplicates_section(stats, image_paths),
        _samples_section(stats, plot_paths),
        _words_section(stats, plot_paths),
        _unlabelled_section(stats),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Poster dataset analysis</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body><main>\n{body}\n</main></body>\n</html>\n"
    )


def _e(value) -> str:
    return html.escape(str(value))


def _num(n) -> str:
    return f"{n:,}" if isinstance(n, int) else _e(n)


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> str:
    def cell(tag, k, value):
        klass = ' class="num"' if k in numeric else ""
        return f"<{tag}{klass}>{_num(value)}</{tag}>"

    head = "".join(cell("th", k, h) for k, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", k, v) for k, v in enumerate(row)) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(plot_paths: dict[str, Path], name: str, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="{file_data_uri(plot_paths[name])}">'


def _header(stats: dict) -> str:
    cards = [
        (stats["rows"], "CSV rows"),
        (stats["unique_ids"], "unique ids"),
        (stats["images"], "poster files"),
        (stats["images_without_labels"]["count"], "posters without labels"),
        (stats["duplicate_rows"], "duplicate rows"),
        (len(stats["identical_poster_groups"]), "byte-identical poster groups"),
        (len(stats["near_identical_pairs"]), "near-identical pairs"),
        (len(stats["undecodable_posters"]), "undecodable posters"),
        (len(stats["genres"]), "genre columns"),
    ]
    card_html = "".join(f'<div class="card"><b>{_num(n)}</b><span>{_e(label)}</span></div>' for n, label in cards)
    source = stats["dataset"]
    return (
        "<h1>Poster dataset analysis</h1>\n"
        f'<p class="sub">labels <code>{_e(source["csv"])}</code> &middot; posters <code>{_e(source["images"])}</code>'
        " &middot; all numbers also in <code>analysis.json</code></p>\n"
        f'<div class="headline">{card_html}</div>'
    )


def _warnings_section(stats: dict) -> str:
    messages = list(stats["warnings"])
    left_out = stats["genres_left_out"]
    if left_out.get("error"):
        messages.append(left_out["error"])
    if not messages:
        return ""
    return "<h2>Warnings</h2>\n" + "\n".join(f'<div class="warn">{_e(m)}</div>' for m in messages)


def _genres_section(stats: dict, plot_paths: dict[str, Path]) -> str:
    left_out = stats["genres_left_out"]
    rows = [
        [genre, count, f"{100 * count / max(stats['rows'], 1):.1f}%", left_out["dropped"].get(genre, "")]
        for genre, count in stats["genre_counts"].items()
    ]
    table = _table(["genre", "rows", "share of rows", "left out of training because"], rows, numeric={1, 2})
    return (
        "<h2>Genres</h2>\n"
        f"<p>Counted over CSV rows (a duplicate row counts twice). Genre selection "
        f"(<code>--min-positives {left_out['min_positives']}</code>, over unique ids) keeps "
        f"{len(left_out['kept'])} of {len(stats['genres'])} genres.</p>\n"
        f'<div class="row">{_plot(plot_paths, "genre_counts", "posters per genre")}{table}</div>'
    )


def _labels_section(stats: dict, plot_paths: dict[str, Path]) -> str:
    histogram = stats["labels_per_poster"]
    total = max(sum(histogram.values()), 1)
    rows = [[n, count, f"{100 * count / total:.1f}%"] for n, count in histogram.items()]
    table = _table(["genres on the poster", "rows", "share"], rows, numeric={0, 1, 2})
    return (
        "<h2>Genres per poster</h2>\n"
        f'<div class="row">{_plot(plot_paths, "labels_per_poster", "genres per poster")}{table}</div>'
    )


def _cooccurrence_section(stats: dict, plot_paths: dict[str, Path]) -> str:
    pairs = [[" + ".join(p["genres"]), p["count"]] for p in stats["top_genre_pairs"]]
    genres = stats["genres"]
    matrix_rows = [[g, *row] for g, row in zip(genres, stats["cooccurrence"], strict=True)]
    matrix = _table(["", *genres], matrix_rows, numeric=set(range(1, len(genres) + 1)), cls="matrix")
    return (
        "<h2>Genre co-occurrence</h2>\n"
        "<p>The heatmap is normalised by row: the cell in row A, column B is the percentage of posters with "
        "genre A that also have genre B, P(B | A). It is not symmetric: a rare genre's row shows which common "
        "genres come with it.</p>\n"
        f"{_plot(plot_paths, 'cooccurrence', 'genre co-occurrence heatmap')}\n"
        f"<h3>Most frequent pairs</h3>\n{_table(['pair', 'rows'], pairs, numeric={1})}\n"
        f"<details><summary>Full co-occurrence counts (rows with both genres)</summary>{matrix}</details>"
    )


def _sizes_section(stats: dict, plot_paths: dict[str, Path]) -> str:
    sizes = stats["image_sizes"]
    summary = [
        [name, sizes[key]["min"], sizes[key]["median"], sizes[key]["max"]]
        for key, name in (("width", "width (px)"), ("height", "height (px)"), ("aspect_ratio", "height / width"))
        if key in sizes
    ]
    common = [[f"{s['width']}x{s['height']}", s["count"]] for s in sizes["most_common"]]
    total_mib = sizes["total_bytes"] / 2**20
    return (
        "<h2>Poster sizes</h2>\n"
        f"<p>{_num(sizes['decodable'])} decodable posters, {_num(sizes['total_bytes'])} bytes "
        f"({total_mib:.1f} MiB) in all.</p>\n"
        f"{_plot(plot_paths, 'image_sizes', 'poster sizes and aspect ratios')}\n"
        f'<div class="row">{_table(["", "min", "median", "max"], summary, numeric={1, 2, 3})}'
        f"{_table(['most common size', 'posters'], common, numeric={1})}</div>"
    )


def _duplicates_section(stats: dict, image_paths: dict[str, Path]) -> str:
    genres = stats["duplicate_poster_genres"]
    groups = stats["identical_poster_groups"]
    pairs = stats["near_identical_pairs"]
    parts = [
        "<h2>Duplicate posters</h2>",
        f"<p>{len(groups)} groups of byte-identical poster files and {len(pairs)} near-identical pairs "
        "(same picture re-encoded or resized: perceptual hashes within a small Hamming distance). "
        "A split must keep each group on one side.</p>",
    ]
    if stats["duplicate_ids"]:
        parts.append(
            f"<p>{stats['duplicate_rows']} duplicate CSV rows, for ids: "
            f"{_e(', '.join(stats['duplicate_ids']))} (identical, merged).</p>"
        )
    parts += ['<div class="group">' + _figures(g, image_paths, genres) + "</div>" for g in groups]
    if pairs:
        parts.append("<h3>Near-identical pairs</h3>")
    for a, b, distance in pairs[:MAX_PAIRS_SHOWN]:
        figures = _figures([a, b], image_paths, genres)
        parts.append(f'<div class="group">{figures}<span class="dist">Hamming distance {distance}</span></div>')
    if len(pairs) > MAX_PAIRS_SHOWN:
        parts.append(f"<p>and {len(pairs) - MAX_PAIRS_SHOWN} more pairs, listed in analysis.json.</p>")
    return "\n".join(parts)


def _figures(ids: list[str], image_paths: dict[str, Path], genres: dict[str, list[str] | None]) -> str:
    figures = []
    for id_ in ids:
        thumb = load_thumbnail(image_paths[id_], PAGE_THUMBNAIL) if id_ in image_paths else None
        src = data_uri(thumb or _placeholder(PAGE_THUMBNAIL))
        label = "no labels" if genres.get(id_) is None else ", ".join(genres[id_]) or "no genre marked"
        figures.append(f'<figure><img alt="{_e(id_)}" src="{src}"><b>{_e(id_)}</b><br>{_e(label)}</figure>')
    return "".join(figures)


def _samples_section(stats: dict, plot_paths: dict[str, Path]) -> str:
    n = len(stats["sample_posters"])
    return (
        f"<h2>Sample posters</h2>\n<p>{n} labelled posters picked at random (seed 0), with their genres.</p>\n"
        f"{_plot(plot_paths, 'sample_posters', 'sample posters with their genres')}"
    )


def _words_section(stats: dict, plot_paths: dict[str, Path]) -> str:
    found = stats.get("telling_words")
    if not found:
        return f"<h2>Words on the posters</h2>\n<p>Not read in this analysis: {_e(TEXT_HINT)}.</p>"
    settings = found["settings"]
    rows = [
        [
            genre,
            entry["posters_with_text"],
            ", ".join(f"{w['word']} ({w['score']:.1f}; {w['posters']})" for w in entry["words"]) or "-",
        ]
        for genre, entry in found["genres"].items()
    ]
    table = _table(["genre", "posters with text", "words (z-score; posters of the genre showing it)"], rows, {1})
    warnings = "".join(f'<div class="warn">{_e(w)}</div>' for w in found["warnings"])
    # No plot when no genre has a word: a grid of empty panels says less than the warning does.
    plot = _plot(plot_paths, "telling_words", "telling words per genre") if "telling_words" in plot_paths else ""
    return (
        "<h2>Words on the posters</h2>\n"
        f"<p>Text read by OCR on {_num(found['posters_read'])} labelled posters, "
        f"{_num(found['posters_with_text'])} of them with text at confidence {settings['min_confidence']} or more. "
        "For each genre, the words most typical of its posters against all the others: the z-score of the "
        "log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi &amp; Quinn 2008), which keeps "
        "a word seen on two posters from topping a list. Each poster counts a word once; words need three "
        f"letters or more and {settings['min_posters']} posters, and English stop words are left out.</p>\n"
        f"{warnings}\n{plot}\n"
        f"<details><summary>The same as a table</summary>{table}</details>"
    )


def _unlabelled_section(stats: dict) -> str:
    unlabelled = stats["images_without_labels"]
    undecodable = stats["undecodable_posters"]
    parts = ["<h2>Posters without labels, undecodable posters</h2>"]
    if unlabelled["count"]:
        shown = ", ".join(unlabelled["first_ids"])
        more = unlabelled["count"] - len(unlabelled["first_ids"])
        parts.append(
            f"<p>{_num(unlabelled['count'])} poster files have no CSV row and so no labels; they are left out "
            f"of training. First ids: {_e(shown)}{f' and {more:,} more' if more else ''}.</p>"
        )
    else:
        parts.append("<p>Every poster file has a CSV row.</p>")
    if undecodable:
        rows = [[u["id"], "yes" if u["labelled"] else "no", u["error"]] for u in undecodable]
        parts.append(_table(["id", "labelled", "why it cannot be decoded"], rows))
    else:
        parts.append("<p>Every poster file decodes.</p>")
    return "\n".join(parts)
