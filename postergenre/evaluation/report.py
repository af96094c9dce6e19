"""The run report: one offline HTML page with the figures beside their baselines, the warnings and the plots.

Everything is inline (CSS, a few lines of script to sort the table, the plots as base64 data URIs), so the
page can be mailed or opened from a disk with no network.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from postergenre.evaluation.metrics import HEADLINE

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

FIGURE_NAMES = {
    "macro_roc_auc": "Macro ROC AUC",
    "macro_average_precision": "Macro average precision",
    "micro_roc_auc": "Micro ROC AUC",
    "micro_average_precision": "Micro average precision",
    "macro_f1": "Macro F1",
    "micro_f1": "Micro F1",
    "macro_balanced_accuracy": "Macro balanced accuracy",
}
BASELINE_NAMES = {"prevalence": "prevalence", "always_no": "always no", "always_yes": "always yes", "top3": "top 3"}
# Model information shown first, in this order; any other key follows.
MODEL_KEYS = ("name", "backbone", "mode", "genres", "preprocessing", "training")


def write_report(
    out_dir: Path,
    metrics: dict,
    *,
    model_info: dict,
    history: pd.DataFrame | None = None,
    y_true=None,
    y_score=None,
    genres: list[str] | None = None,
    extra_sections: list[tuple[str, str]] = (),
) -> Path:
    """Write the plots (PNG) and report.html into ``out_dir``; return the path of report.html.

    The ROC and precision-recall curves need ``y_true``, ``y_score`` and ``genres``; without them the
    report says where the curves would be.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = save_plots(out_dir, metrics, history=history, y_true=y_true, y_score=y_score, genres=genres)
    page = render_report(metrics, model_info=model_info, images=images, extra_sections=extra_sections)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def save_plots(out_dir: Path, metrics: dict, *, history=None, y_true=None, y_score=None, genres=None) -> dict:
    """Draw each plot we have numbers for into ``out_dir``; return {title: png path}."""
    from postergenre.evaluation import plots

    drawings = {}
    if y_true is not None and y_score is not None and genres is not None:
        in_macro = metrics.get("genres_in_macro")
        drawings["ROC curves"] = (
            "roc_curves.png",
            lambda: plots.plot_roc_curves(y_true, y_score, genres, genres_in_macro=in_macro),
        )
        drawings["Precision-recall curves"] = (
            "pr_curves.png",
            lambda: plots.plot_pr_curves(y_true, y_score, genres, genres_in_macro=in_macro),
        )
    if history is not None and len(history):
        drawings["Training history"] = ("history.png", lambda: plots.plot_history(history))
    drawings["Per-genre figures"] = ("per_genre.png", lambda: plots.plot_per_genre(metrics))

    images = {}
    for title, (filename, draw) in drawings.items():
        images[title] = out_dir / filename
        draw().savefig(images[title])
    return images


def render_report(metrics: dict, *, model_info: dict, images: dict, extra_sections=()) -> str:
    """The report page as one self-contained HTML string."""
    name = model_info.get("name") or model_info.get("backbone") or "model"
    body = [
        f"<h1>Run report: {_e(name)}</h1>",
        _summary_line(metrics),
        _warnings_box(metrics.get("warnings", [])),
        "<h2>Model</h2>",
        _info_table(model_info),
        "<h2>Headline figures beside trivial baselines</h2>",
        headline_table(metrics),
        "<h2>Per genre</h2>",
        per_genre_table(metrics),
        "<h2>Plots</h2>",
        _plots(images),
    ]
    body += [f"<h2>{_e(title)}</h2>\n{section}" for title, section in extra_sections]
    return html_page(f"postergenre report: {name}", "\n".join(body))


def html_page(title: str, body: str) -> str:
    """A whole offline page around ``body``: the house CSS and the table-sorting script inline."""
    return _PAGE.format(title=_e(title), css=_CSS, script=_SCRIPT, body=body)


def headline_table(metrics: dict) -> str:
    """Rows: the headline figures; columns: the model, then each baseline. A baseline that matches or beats
    the model is marked, because then the model's figure says nothing about posters."""
    baselines = metrics.get("baselines", {})
    header = "".join(f"<th>{_e(BASELINE_NAMES.get(b, b))}</th>" for b in baselines)
    rows = []
    for key in HEADLINE:
        model = metrics.get(key)
        best = max((b.get(key) for b in baselines.values() if b.get(key) is not None), default=None)
        beaten = model is not None and best is not None and best >= model
        cells = [f'<td class="{"beaten" if beaten else "model"}">{_num(model)}</td>']
        for baseline in baselines.values():
            value = baseline.get(key)
            mark = " matches" if value is not None and model is not None and value >= model else ""
            cells.append(f'<td class="baseline{mark}">{_num(value)}</td>')
        rows.append(f"<tr><th>{_e(FIGURE_NAMES.get(key, key))}</th>{''.join(cells)}</tr>")
    notes = "".join(
        f"<li><b>{_e(BASELINE_NAMES.get(b, b))}</b>: {_e(v.get('description', ''))}</li>" for b, v in baselines.items()
    )
    return (
        f'<table class="headline"><tr><th>figure</th><th>model</th>{header}</tr>{"".join(rows)}</table>'
        '<p class="note">Baselines use only the training prevalence of each genre, never the poster. A red model '
        "cell means a baseline matches or beats it. Micro figures pool genres, so a score that only knows which "
        "genres are common already scores well on them (see the prevalence baseline's micro AUC); the macro figures "
        f'are the honest ones.</p><ul class="note">{notes}</ul>'
    )


def per_genre_table(metrics: dict) -> str:
    """One row per genre, sortable by clicking a column; flagged genres marked."""
    columns = [
        ("genre", "genre"),
        ("positives", "test positives"),
        ("prevalence", "prevalence (AP baseline)"),
        ("roc_auc", "ROC AUC"),
        ("average_precision", "AP"),
        ("balanced_accuracy", "balanced accuracy"),
        ("f1", "F1"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("threshold", "threshold"),
    ]
    header = "".join(f"<th>{_e(label)}</th>" for _, label in columns)
    rows = []
    for row in metrics.get("per_genre", []):
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if key == "genre":
                mark = (
                    ' <span class="flag" title="too few test positives or negatives">few</span>'
                    if row["flagged"]
                    else ""
                )
                cells.append(f'<td data-sort="{_e(value)}">{_e(value)}{mark}</td>')
            else:
                sort = "" if value is None else f' data-sort="{value}"'
                cells.append(f"<td{sort}>{value if key == 'positives' else _num(value)}</td>")
        rows.append(f'<tr class="{"flagged" if row["flagged"] else ""}">{"".join(cells)}</tr>')
    return (
        f'<table class="sortable" id="per-genre"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Click a column to sort. Balanced accuracy, F1, precision and recall are at the genre\'s '
        'threshold (tuned on validation). Genres marked <span class="flag">few</span> are kept out of the macro '
        "and micro figures.</p>"
    )


def image_data_uri(path: Path) -> str:
    """A PNG file as a data URI, so the page needs no files beside it."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _summary_line(metrics: dict) -> str:
    n_macro, n_genres = len(metrics.get("genres_in_macro", [])), len(metrics.get("per_genre", []))
    return (
        f'<p class="summary">{metrics.get("n_samples", "?")} test posters; {n_macro} of {n_genres} genres in the '
        f"macro and micro figures (at least {metrics.get('min_positives', '?')} test positives and negatives).</p>"
    )


def _warnings_box(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
    return f'<div class="warnings"><b>{len(warnings)} warning(s): figures that may mislead</b><ul>{items}</ul></div>'


def _info_table(info: dict) -> str:
    if not info:
        return "<p>No model information was given.</p>"
    keys = [k for k in MODEL_KEYS if k in info] + [k for k in info if k not in MODEL_KEYS]
    return (
        '<table class="info">'
        + "".join(f"<tr><th>{_e(k)}</th><td>{_value(info[k])}</td></tr>" for k in keys)
        + "</table>"
    )


def _value(value) -> str:
    if isinstance(value, dict):
        return _info_table(value) if value else "—"
    if isinstance(value, list | tuple):
        return _e(", ".join(str(v) for v in value)) + f' <span class="count">({len(value)})</span>'
    if isinstance(value, float):
        return f"{value:g}"
    return _e(value)


def _plots(images: dict) -> str:
    if not images:
        return "<p>No plots.</p>"
    parts = [
        f'<figure><img alt="{_e(title)}" src="{image_data_uri(path)}"><figcaption>{_e(title)}</figcaption></figure>'
        for title, path in images.items()
    ]
    if "ROC curves" not in images:
        parts.append(
            '<p class="note">No ROC or precision-recall curves: the test labels and scores were not given.</p>'
        )
    return "\n".join(parts)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.info td, table.info th { text-align: left; vertical-align: top; }
table.info table { margin: 0; font-size: 1em; }
thead th, table.headline tr:first-child th { background: #f3f3f3; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th:hover { background: #e6e6e6; }
td.model { font-weight: bold; background: #e9f6ec; }
td.beaten { font-weight: bold; background: #fbe3e1; color: #8a1c12; }
td.baseline { color: #555; } td.matches { background: #fbe3e1; }
tr.flagged td { color: #888; background: #fafafa; }
.flag { font-size: 0.75em; background: #f5c542; color: #222; border-radius: 3px; padding: 0 0.3em; }
.warnings { background: #fff4d6; border: 1px solid #e0b23c; border-left: 6px solid #e0a000;
            padding: 0.6em 1em; margin: 1em 0; }
.warnings ul { margin: 0.3em 0 0 0; }
.note { color: #555; font-size: 0.85em; } .count { color: #888; font-size: 0.85em; }
.summary { font-size: 1.05em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
"""

# Sorts a table by the clicked column (data-sort where given, else the text): numbers numerically, n/a last;
# a second click reverses.
_SCRIPT = """
document.querySelectorAll("table.sortable thead th").forEach((th, col) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const down = th.dataset.dir !== "down";
    th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.dir);
    th.dataset.dir = down ? "down" : "up";
    const key = r => {
      const cell = r.cells[col], v = cell.dataset.sort ?? cell.textContent.trim();
      return v === "n/a" || v === "" ? undefined : v;
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === undefined) return 1;
      if (y === undefined) return -1;
      const nx = parseFloat(x), ny = parseFloat(y);
      const c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return down ? -c : c;
    });
    rows.forEach(r => body.appendChild(r));
  });
});
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
<script>{script}</script>
</body>
</html>
"""
