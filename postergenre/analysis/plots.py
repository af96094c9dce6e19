"""Figures of the data analysis.

Each function takes its numbers (as :mod:`postergenre.analysis.stats` computes them) and an
optional matplotlib ``ax`` to draw into; without one it makes its own figure. It returns the
axes it drew on. matplotlib is imported inside the functions, so that importing this module
costs nothing; figures made here are bare ``Figure`` objects saved through Agg, so no display
is needed.
"""

from __future__ import annotations

import numpy as np

BAR_COLOR = "#3b6ea5"
FONT_SIZE = 11


# The report's look; draw inside ``matplotlib.rc_context(STYLE)`` to get it.
STYLE = {"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 2, "axes.titleweight": "bold"}


def new_axes(figsize: tuple[float, float], ncols: int = 1):
    """Axes on a new figure that belongs to no GUI backend and is never shown.

    A bare ``Figure`` saves through Agg and leaves pyplot's state (and a notebook's backend)
    untouched, and it needs no closing.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").subplots(1, ncols)


def _axes(ax, figsize):
    return ax if ax is not None else new_axes(figsize)


def genre_counts(counts: dict[str, int], ax=None, *, total: int | None = None):
    """Horizontal bars, most frequent genre at the top; ``total`` adds each bar's share of it."""
    ax = _axes(ax, (8, 0.32 * len(counts) + 1.5))
    genres = list(counts)[::-1]
    values = [counts[g] for g in genres]
    ax.barh(genres, values, color=BAR_COLOR)
    for y, value in enumerate(values):
        share = f" ({_percent(value, total)})" if total else ""
        ax.text(value, y, f" {value:,}{share}", va="center", fontsize=FONT_SIZE - 2)
    ax.set_xlim(0, max(values, default=1) * 1.22)
    ax.set_ylim(-0.6, len(genres) - 0.4)
    ax.set_xlabel("posters (CSV rows) with the genre")
    ax.set_title("Posters per genre")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def _percent(part: int, total: int) -> str:
    share = 100 * part / total
    return f"{share:.2f}%" if 0 < share < 0.1 else f"{share:.1f}%"


def conditional_cooccurrence(matrix: list[list[int]]) -> np.ndarray:
    """P(column genre | row genre): each row of the co-occurrence matrix over its diagonal."""
    counts = np.asarray(matrix, dtype=float)
    diagonal = np.diag(counts)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(diagonal > 0, counts / diagonal, np.nan)


def cooccurrence_heatmap(genres: list[str], matrix: list[list[int]], ax=None):
    """Heatmap of P(column | row), in percent; the diagonal (always 100%) is left blank."""
    n = len(genres)
    ax = _axes(ax, (0.42 * n + 3, 0.42 * n + 2))
    share = conditional_cooccurrence(matrix)
    np.fill_diagonal(share, np.nan)
    image = ax.imshow(share * 100, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(n), genres, rotation=60, ha="right", rotation_mode="anchor")
    # A row over a handful of posters is noise; its count beside the name says so.
    counts = np.diag(np.asarray(matrix))
    ax.set_yticks(range(n), [f"{g} ({c:,})" for g, c in zip(genres, counts, strict=True)])
    # Numbers only where they fit: a 25-genre matrix at this size takes 2-digit labels.
    fontsize = max(5, min(9, 200 // max(n, 1)))
    for r, c in zip(*np.nonzero(share >= 0.005), strict=True):
        value = share[r, c] * 100
        ax.text(
            c, r, f"{value:.0f}", ha="center", va="center", fontsize=fontsize, color="white" if value > 55 else "black"
        )
    ax.set_xlabel("genre B")
    ax.set_ylabel("genre A (posters with it)")
    ax.set_title(
        "Co-occurrence: % of genre A posters that also have genre B\n(each row is divided by its genre's count)"
    )
    ax.figure.colorbar(image, ax=ax, shrink=0.6, label="P(B | A), %")
    return ax


def labels_per_poster(histogram: dict[str, int], ax=None):
    """Bars of how many posters carry 0, 1, 2, ... genres."""
    ax = _axes(ax, (6, 4))
    labels = list(histogram)
    values = [histogram[k] for k in labels]
    bars = ax.bar(labels, values, color=BAR_COLOR, width=0.6)
    total = sum(values) or 1
    ax.bar_label(bars, [f"{v:,}\n({100 * v / total:.0f}%)" for v in values], padding=3, fontsize=FONT_SIZE - 1)
    ax.set_ylim(0, max(values, default=1) * 1.25)
    ax.set_xlabel("genres on the poster")
    ax.set_ylabel("posters (CSV rows)")
    ax.set_title("Genres per poster")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def image_sizes(all_sizes: list[list[int]], ax=None):
    """Width against height, one disc per distinct size, its area and colour growing with its count."""
    from matplotlib.colors import LogNorm

    ax = _axes(ax, (6, 5))
    if not all_sizes:
        ax.set_title("Poster sizes (no decodable posters)")
        return ax
    widths, heights, counts = np.asarray(all_sizes).T
    order = np.argsort(counts)  # draw the common sizes last, on top
    points = ax.scatter(
        widths[order],
        heights[order],
        s=12 + 60 * np.log10(counts[order]),
        c=counts[order],
        cmap="viridis",
        norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)),
        alpha=0.75,
        edgecolors="none",
    )
    ax.figure.colorbar(points, ax=ax, label="posters of that size")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Poster sizes")
    ax.grid(alpha=0.3)
    return ax


def aspect_ratios(all_sizes: list[list[int]], ax=None):
    """Histogram of height / width, weighted by how many posters have each size."""
    ax = _axes(ax, (6, 5))
    if not all_sizes:
        ax.set_title("Aspect ratio (no decodable posters)")
        return ax
    widths, heights, counts = np.asarray(all_sizes, dtype=float).T
    ax.hist(heights / widths, bins=40, weights=counts, color=BAR_COLOR)
    ax.axvline(1.5, color="#c44e52", linestyle="--", linewidth=1.2, label="2:3, a standard one-sheet")
    ax.set_xlabel("aspect ratio (height / width)")
    ax.set_ylabel("posters")
    ax.set_title("Aspect ratio")
    ax.legend(frameon=False, fontsize=FONT_SIZE - 1)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def poster_grid(thumbnails: list, captions: list[str], ax=None, *, columns: int = 6, cell=(150, 225)):
    """Posters in a grid, each with its caption under it.

    The thumbnails (PIL images) are pasted into one mosaic and drawn as a single image, which
    is much faster than one axes per poster.
    """
    from PIL import Image

    rows = max(1, -(-len(thumbnails) // columns))
    cell_w, cell_h = cell
    caption_h = 52
    mosaic = Image.new("RGB", (columns * cell_w, rows * (cell_h + caption_h)), "white")
    for k, thumb in enumerate(thumbnails):
        thumb = thumb.copy()
        thumb.thumbnail((cell_w - 8, cell_h - 8))
        x = (k % columns) * cell_w + (cell_w - thumb.width) // 2
        y = (k // columns) * (cell_h + caption_h) + (cell_h - thumb.height)
        mosaic.paste(thumb, (x, y))
    ax = _axes(ax, (columns * cell_w / 100, rows * (cell_h + caption_h) / 100))
    ax.imshow(mosaic, interpolation="lanczos")
    for k, caption in enumerate(captions):
        x = (k % columns) * cell_w + cell_w / 2
        y = (k // columns) * (cell_h + caption_h) + cell_h + 4
        ax.text(x, y, caption, ha="center", va="top", fontsize=FONT_SIZE - 3, wrap=False, linespacing=1.1)
    ax.set_axis_off()
    return ax


def word_bars(
    entries: list[dict],
    ax=None,
    *,
    title: str = "",
    posters_with_text: int | None = None,
    slots: int | None = None,
    max_score: float | None = None,
):
    """One genre's telling words as horizontal bars of their z-score, the strongest at the top.

    ``entries`` are ``{"word", "score", "posters"}`` dicts; each bar is labelled with how many of
    the genre's posters show the word (out of ``posters_with_text``, when given). ``slots`` (bars
    of room) and ``max_score`` (the x scale) let panels side by side share one bar size and scale.
    """
    ax = _axes(ax, (3, 2.4))
    ax.set_title(title, fontsize=FONT_SIZE, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    if not entries:
        ax.text(0.5, 0.5, "no telling word", ha="center", va="center", color="#777", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return ax
    slots = max(slots or 0, len(entries))
    # Bars fill the top slots, so a genre with two words shows two bars of the usual size, not two fat ones.
    positions = np.arange(slots - 1, slots - 1 - len(entries), -1)
    ax.barh(positions, [e["score"] for e in entries], color=BAR_COLOR)
    ax.set_yticks(positions, [e["word"] for e in entries])
    out_of = f"/{posters_with_text}" if posters_with_text else ""
    for y, entry in zip(positions, entries, strict=True):
        ax.text(entry["score"], y, f" {entry['posters']}{out_of}", va="center", fontsize=FONT_SIZE - 3)
    ax.set_xlim(0, (max_score or max(e["score"] for e in entries)) * 1.35)
    ax.set_ylim(-0.6, slots - 0.4)
    ax.tick_params(labelsize=FONT_SIZE - 2)
    return ax


def telling_words_grid(genres: dict[str, dict], *, columns: int = 5):
    """Small multiples of :func:`word_bars`, one per genre in the order given, on one x scale.

    ``genres`` maps each genre to ``{"words": [...], "posters_with_text": n}`` as
    :func:`postergenre.analysis.stats.telling_words_stats` gives them. Returns the first axes.
    """
    from matplotlib.figure import Figure

    names = list(genres)
    columns = max(1, min(columns, len(names)))
    rows = max(1, -(-len(names) // columns))
    scores = [w["score"] for found in genres.values() for w in found["words"]]
    slots = max((len(found["words"]) for found in genres.values()), default=1)
    figure = Figure(figsize=(3.1 * columns, (0.22 * slots + 0.8) * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, genre in zip(axes, names, strict=False):
        found = genres[genre]
        word_bars(
            found["words"],
            ax=ax,
            title=f"{genre} ({found['posters_with_text']} with text)",
            posters_with_text=found["posters_with_text"],
            slots=slots,
            max_score=max(scores, default=None),
        )
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    figure.supxlabel(
        "z-score of the log-odds ratio, one scale for all genres (labels: the genre's posters with the word)"
    )
    return axes[0]


def save(ax, path) -> None:
    """Write the axes' figure as a PNG."""
    ax.figure.savefig(path, dpi=100)
