"""Several evaluated runs side by side: headline figures, per-genre AUC, a plot and one offline page.

Each run folder holds the ``metrics.json`` that ``postergenre evaluate`` writes (the dict of
:func:`postergenre.evaluation.metrics.evaluate_scores`) and, where present, ``model.json`` for the name,
backbone, mode and whether the model reads poster text. Runs over different genres are compared on the
genres they share.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from postergenre.errors import PosterGenreError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

HEADLINE_COLUMNS = {
    "macro_roc_auc": "macro AUC",
    "macro_average_precision": "macro AP",
    "micro_roc_auc": "micro AUC",
    "macro_f1": "macro F1",
}
# Macro figures are recomputed from the per-genre rows over the genres every run scores reliably; micro
# figures cannot be recomputed without the scores, so they are each run's own.
PER_GENRE_KEYS = {"macro_roc_auc": "roc_auc", "macro_average_precision": "average_precision", "macro_f1": "f1"}


@dataclass
class Run:
    """One evaluated run: where it is, what to call it, and its metrics."""

    folder: Path
    name: str
    backbone: str | None
    mode: str | None
    metrics: dict
    # How the model reads poster text: "concat" or "late"; "no" for image only; None without model.json.
    text: str | None = None


@dataclass
class Comparison:
    """Runs side by side. ``headline``: one row per run; ``per_genre_auc``: genres by runs.

    ``common_genres``: the genres every run has; ``shared_macro_genres``: those that no run flagged, over
    which the macro figures of ``headline`` are taken, so that every run is averaged over the same genres.
    """

    runs: list[Run]
    headline: pd.DataFrame
    per_genre_auc: pd.DataFrame
    common_genres: list[str]
    shared_macro_genres: list[str]
    notes: list[str] = field(default_factory=list)


def load_run(folder: Path) -> Run:
    """Read ``folder/metrics.json`` (required) and ``folder/model.json`` (optional)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PosterGenreError(f"{folder}: no such run folder; give the folder that `postergenre train` wrote")
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise PosterGenreError(f"{folder}: no metrics.json; run `postergenre evaluate {folder}` first")
    metrics = _read_json(metrics_path)
    if not isinstance(metrics, dict) or "per_genre" not in metrics:
        raise PosterGenreError(
            f"{metrics_path}: not the metrics that `postergenre evaluate` writes (no per_genre list); "
            f"run `postergenre evaluate {folder}` again"
        )
    model = _read_json(folder / "model.json") if (folder / "model.json").is_file() else {}
    text = ((model.get("text") or {}).get("fusion") or "no") if model else None
    return Run(folder, model.get("name") or folder.name, model.get("backbone"), model.get("mode"), metrics, text)


def compare_runs(folders: list[Path]) -> Comparison:
    """Load each run and line their figures up on the genres they share."""
    runs = _unique_names([load_run(f) for f in folders])
    genre_sets = [[row["genre"] for row in run.metrics["per_genre"]] for run in runs]
    common = [g for g in genre_sets[0] if all(g in genres for genres in genre_sets[1:])]
    if not common:
        raise PosterGenreError(
            "the runs share no genre, so there is nothing to compare: "
            + "; ".join(f"{r.folder}: {', '.join(g)}" for r, g in zip(runs, genre_sets, strict=True))
        )
    flagged = {row["genre"] for run in runs for row in run.metrics["per_genre"] if row.get("flagged")}
    shared = [g for g in common if g not in flagged]
    notes = _notes(runs, genre_sets, common, shared)
    for note in notes:
        logger.warning(note)
    return Comparison(
        runs=runs,
        headline=_headline(runs, shared),
        per_genre_auc=_per_genre_auc(runs, common),
        common_genres=common,
        shared_macro_genres=shared,
        notes=notes,
    )


def write_comparison(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """compare.csv (headline), compare_per_genre.csv, compare.png and compare.html in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "compare.csv",
        "per_genre_csv": out_dir / "compare_per_genre.csv",
        "png": out_dir / "compare.png",
        "html": out_dir / "compare.html",
    }
    comparison.headline.to_csv(paths["csv"])
    comparison.per_genre_auc.to_csv(paths["per_genre_csv"])
    plot_comparison(comparison.per_genre_auc, flagged=_flagged_anywhere(comparison)).savefig(paths["png"])
    paths["html"].write_text(render_comparison(comparison, paths["png"]), encoding="utf-8")
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def plot_comparison(per_genre_auc: pd.DataFrame, *, flagged: set[str] = frozenset(), ax=None) -> Figure:
    """Grouped bars: one group per genre, one bar per run, with chance (AUC 0.5) as a dotted line."""
    from matplotlib.figure import Figure

    n_genres, n_runs = per_genre_auc.shape
    if ax is None:
        fig_width = min(16.0, max(7.0, 0.1 * n_genres * (n_runs + 1) + 3))
        fig = Figure(figsize=(fig_width, 4.8), dpi=110, layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    x = np.arange(n_genres)
    width = 0.8 / max(n_runs, 1)
    for k, run in enumerate(per_genre_auc.columns):
        values = per_genre_auc[run].to_numpy(dtype=float)
        ax.bar(x - 0.4 + width * (k + 0.5), np.nan_to_num(values), width, label=run, color=f"C{k % 10}")
    for i, genre in enumerate(per_genre_auc.index):
        if per_genre_auc.loc[genre].isna().any():
            ax.text(i, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
    ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance (0.5)")
    labels = [f"{g} *" if g in flagged else g for g in per_genre_auc.index]
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n_genres - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Test ROC AUC")
    note = " (* too few test positives in some run: not in the macro figures)" if flagged else ""
    ax.set_title(f"Per-genre ROC AUC by run{note}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    return fig


def render_comparison(comparison: Comparison, png: Path | None = None) -> str:
    """compare.html: the notes, both tables and the plot, all inline."""
    from postergenre.evaluation.report import html_page, image_data_uri

    notes = "".join(f"<li>{html.escape(n)}</li>" for n in comparison.notes)
    body = [
        f"<h1>Comparison of {len(comparison.runs)} runs</h1>",
        f'<div class="warnings"><b>Read with care</b><ul>{notes}</ul></div>' if notes else "",
        "<h2>Headline figures</h2>",
        _table(comparison.headline.reset_index()),
        "<h2>Per-genre ROC AUC</h2>",
        _table(comparison.per_genre_auc.reset_index()),
    ]
    if png is not None:
        body.append(f'<figure><img alt="Per-genre ROC AUC by run" src="{image_data_uri(png)}"></figure>')
    body.append(
        "<h2>Runs</h2><ul>"
        + "".join(f"<li>{html.escape(r.name)}: {html.escape(str(r.folder))}</li>" for r in comparison.runs)
        + "</ul>"
    )
    return html_page("postergenre comparison", "\n".join(body))


def format_table(frame: pd.DataFrame) -> str:
    """A DataFrame as plain text for the terminal: three decimals, n/a for missing figures."""
    return frame.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="n/a")


def _headline(runs: list[Run], shared: list[str]) -> pd.DataFrame:
    rows = {}
    for run in runs:
        row = {"backbone": run.backbone, "mode": run.mode, "text": run.text}
        row["test posters"] = run.metrics.get("n_samples")
        for key, label in HEADLINE_COLUMNS.items():
            row[label] = _macro_on(run, shared, PER_GENRE_KEYS[key]) if key in PER_GENRE_KEYS else run.metrics.get(key)
        row["n genres"] = len(shared)
        # The prevalence baseline's macro AP is the mean test prevalence over the same genres.
        row["baseline macro AP"] = _macro_on(run, shared, "prevalence")
        rows[run.name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("run")
    # Without model.json there is no backbone or mode to show; a column of blanks only adds noise.
    return frame.dropna(axis="columns", how="all")


def _per_genre_auc(runs: list[Run], common: list[str]) -> pd.DataFrame:
    table = {run.name: {row["genre"]: row["roc_auc"] for row in run.metrics["per_genre"]} for run in runs}
    return pd.DataFrame(table).reindex(common).astype(float).rename_axis("genre")


def _macro_on(run: Run, genres: list[str], key: str) -> float | None:
    values = [row[key] for row in run.metrics["per_genre"] if row["genre"] in genres and row.get(key) is not None]
    return float(np.mean(values)) if values else None


def _notes(runs: list[Run], genre_sets: list[list[str]], common: list[str], shared: list[str]) -> list[str]:
    notes = []
    if any(len(genres) > len(common) for genres in genre_sets):
        left_out = [
            f"{run.name} also has {', '.join(g for g in genres if g not in common)}"
            for run, genres in zip(runs, genre_sets, strict=True)
            if len(genres) > len(common)
        ]
        notes.append(
            f"the runs cover different genres; they are compared on the {len(common)} genres they share "
            f"({'; '.join(left_out)})"
        )
    if any(set(run.metrics.get("genres_in_macro", [])) != set(shared) for run in runs):
        notes.append(
            f"macro AUC, AP and F1 are taken over the {len(shared)} genres that every run scores reliably, not over "
            "each run's own macro genres; micro AUC is each run's own and covers different genres, so compare it "
            "with care"
        )
    sizes = {run.name: run.metrics.get("n_samples") for run in runs}
    if len(set(sizes.values())) > 1:
        notes.append(
            "the runs were evaluated on different numbers of test posters "
            f"({', '.join(f'{n}: {s}' for n, s in sizes.items())}); differences may come from the test sets, "
            "not the models. Evaluate every run on the same split to compare them"
        )
    left_out = [g for g in common if g not in shared]
    if left_out:
        notes.append(
            f"{', '.join(left_out)}: too few test positives or negatives in at least one run for a reliable AUC; "
            "shown per genre but left out of the macro figures"
        )
    return notes


def _flagged_anywhere(comparison: Comparison) -> set[str]:
    return set(comparison.common_genres) - set(comparison.shared_macro_genres)


def _unique_names(runs: list[Run]) -> list[Run]:
    """Runs named alike (two folders called "run") get their folder path as their name instead."""
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = str(run.folder)
    if len({r.name for r in runs}) < len(runs):
        raise PosterGenreError(f"the same run folder is given twice: {', '.join(str(r.folder) for r in runs)}")
    return runs


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PosterGenreError(f"{path}: not valid JSON ({exc}); run `postergenre evaluate` again") from exc


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="n/a", classes="sortable", border=0)
