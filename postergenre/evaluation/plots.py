"""Evaluation plots. Each takes numbers (and an optional ``ax``) and returns the matplotlib Figure.

matplotlib is imported inside each function and figures are built without pyplot, so importing this module
is cheap and nothing depends on a display or on pyplot's global state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

# The real dataset has over twenty genres: ten clearly different colours, then the same ten dashed and dotted,
# read better than twenty colours of which half are pale.
_LINESTYLES = ("-", "--", ":")
_SMALL = 7


def plot_roc_curves(
    y_true,
    y_score,
    genres: list[str],
    *,
    ax=None,
    max_genres: int | None = None,
    genres_in_macro: list[str] | None = None,
) -> Figure:
    """One ROC curve per genre (the ``max_genres`` with most positives) and the macro-average curve.

    The macro average is over ``genres_in_macro`` (default: every genre with a curve), so that it matches
    the macro figure of the report.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    fig, ax = _axes(ax, (8.5, 5.5))
    shown = set(_most_positive(y_true, max_genres))
    macro = _macro_members(y_true, genres, genres_in_macro)
    grid = np.linspace(0, 1, 201)
    tprs, aucs = [], []
    for i, g in enumerate(_defined(y_true)):
        fpr, tpr, _ = roc_curve(y_true[:, g], y_score[:, g])
        auc = float(roc_auc_score(y_true[:, g], y_score[:, g]))
        if g in macro:
            tprs.append(np.interp(grid, fpr, tpr))
            aucs.append(auc)
        if g in shown:
            ax.plot(fpr, tpr, lw=1, alpha=0.8, **_style(i), label=f"{genres[g]} ({auc:.2f}, n={y_true[:, g].sum()})")
    if tprs:
        mean_tpr = np.mean(tprs, axis=0)
        mean_tpr[0] = 0.0
        label = f"macro average of {len(tprs)} ({np.mean(aucs):.2f})"
        ax.plot(grid, mean_tpr, color="black", lw=2.5, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance (0.50)")
    title = _title("ROC curves", y_true, shown, genres)
    _finish(ax, "False positive rate", "True positive rate", title, legend_title="genre (AUC, test positives)")
    return fig


def plot_pr_curves(
    y_true,
    y_score,
    genres: list[str],
    *,
    ax=None,
    max_genres: int | None = None,
    genres_in_macro: list[str] | None = None,
) -> Figure:
    """One precision-recall curve per genre, the macro average, and chance (mean test prevalence), as ROC."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    fig, ax = _axes(ax, (8.5, 5.5))
    shown = set(_most_positive(y_true, max_genres))
    macro = _macro_members(y_true, genres, genres_in_macro)
    grid = np.linspace(0, 1, 201)
    precisions, aps = [], []
    for i, g in enumerate(_defined(y_true)):
        precision, recall, _ = precision_recall_curve(y_true[:, g], y_score[:, g])
        ap = float(average_precision_score(y_true[:, g], y_score[:, g]))
        if g in macro:
            # recall comes out decreasing; read the step curve (the one AP sums) on an increasing grid.
            precisions.append(_step_interp(grid, recall[::-1], precision[::-1]))
            aps.append(ap)
        if g in shown:
            ax.step(recall, precision, where="post", lw=1, alpha=0.8, **_style(i), label=f"{genres[g]} ({ap:.2f})")
    if precisions:
        label = f"macro average of {len(precisions)} ({np.mean(aps):.2f})"
        ax.plot(grid, np.mean(precisions, axis=0), color="black", lw=2.5, label=label)
        chance = float(np.mean(y_true[:, sorted(macro)]))
        ax.axhline(chance, color="grey", lw=1, ls=":", label=f"chance: mean prevalence ({chance:.2f})")
    title = _title("Precision-recall curves", y_true, shown, genres)
    _finish(ax, "Recall", "Precision", title, legend_title="genre (average precision)")
    return fig


def plot_history(history: pd.DataFrame, *, ax=None) -> Figure:
    """Training loss (left axis) and validation figures (right axis, 0 to 1) per epoch."""
    fig, ax = _axes(ax, (7.5, 4.2))
    x = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
    losses = [c for c in history.columns if "loss" in c]
    figures = [c for c in history.columns if c.startswith("val_") and "loss" not in c]
    for i, column in enumerate(losses):
        ax.plot(x, history[column], marker="o", ms=3, color=f"C{i}", label=column)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    handles, labels = ax.get_legend_handles_labels()
    if figures:
        right = ax.twinx()
        for i, column in enumerate(figures, start=len(losses)):
            right.plot(x, history[column], marker="s", ms=3, ls="--", color=f"C{i}", label=column)
        right.set_ylabel("Validation figure")
        right.set_ylim(0, 1)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if not handles:
        ax.text(0.5, 0.5, "no loss or validation columns in the history", ha="center", transform=ax.transAxes)
    else:
        ax.legend(handles, labels, fontsize=_SMALL + 1, loc="best")
    ax.set_title("Training history")
    ax.grid(alpha=0.3)
    return fig


def plot_per_genre(metrics: dict, *, ax=None) -> Figure:
    """ROC AUC and average precision per genre as bars, beside each baseline (AUC 0.5, AP = test prevalence).

    Takes the dict of :func:`postergenre.evaluation.metrics.evaluate_scores`. Flagged genres (too few test
    positives) are drawn pale and marked; genres with no AUC show "n/a".
    """
    rows = sorted(metrics["per_genre"], key=lambda r: (r["roc_auc"] is None, -(r["roc_auc"] or 0)))
    fig, ax = _axes(ax, (8, max(2.4, 1.2 + 0.3 * len(rows))))
    y = np.arange(len(rows))
    height = 0.38
    for offset, key, colour, name in (
        (-height / 2, "roc_auc", "C0", "ROC AUC"),
        (height / 2, "average_precision", "C1", "AP"),
    ):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        bars = ax.barh(y + offset, values, height, color=colour, label=name)
        for bar, row in zip(bars, rows, strict=True):
            bar.set_alpha(0.35 if row["flagged"] else 1.0)
    ax.scatter(
        [r["prevalence"] for r in rows],
        y + height / 2,
        marker="|",
        s=120,
        color="black",
        zorder=3,
        label="AP baseline (test prevalence)",
    )
    ax.axvline(0.5, color="grey", ls=":", lw=1, label="AUC baseline (0.5)")
    for k, row in enumerate(rows):
        if row["roc_auc"] is None:
            ax.text(0.01, k, "n/a", va="center", fontsize=_SMALL)
    ax.set_yticks(y, [r["genre"] + (" *" if r["flagged"] else "") for r in rows], fontsize=_SMALL + 1)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("Score on the test set")
    flagged = (
        " (* and pale: too few test positives, kept out of the macro figures)" if metrics["genres_flagged"] else ""
    )
    ax.set_title(f"Per-genre ROC AUC and AP{flagged}", fontsize=9)
    ax.legend(fontsize=_SMALL, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _axes(ax, size: tuple[float, float]):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    # Constrained layout makes room for legends placed outside the axes; tight_layout would cut them off.
    fig = Figure(figsize=size, dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def _defined(y_true: np.ndarray) -> np.ndarray:
    """Genres with both positives and negatives: the only ones with a curve."""
    positives = y_true.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < len(y_true)))


def _most_positive(y_true: np.ndarray, max_genres: int | None) -> np.ndarray:
    order = np.argsort(-y_true.sum(axis=0), kind="stable")
    return order if max_genres is None else order[:max_genres]


def _style(i: int) -> dict:
    from matplotlib import colormaps

    return {"color": colormaps["tab10"](i % 10), "ls": _LINESTYLES[(i // 10) % len(_LINESTYLES)]}


def _step_interp(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The value of a right-continuous step function (x increasing) at each grid point."""
    index = np.searchsorted(x, grid, side="left")
    return y[np.clip(index, 0, len(y) - 1)]


def _macro_members(y_true: np.ndarray, genres: list[str], genres_in_macro: list[str] | None) -> set[int]:
    defined = set(_defined(y_true).tolist())
    if genres_in_macro is None:
        return defined
    return defined & {genres.index(g) for g in genres_in_macro if g in genres}


def _title(name: str, y_true: np.ndarray, shown: set[int], genres: list[str]) -> str:
    defined = set(_defined(y_true).tolist())
    title = f"{name}: {len(defined & shown)} of {len(genres)} genres drawn"
    if len(defined) < len(genres):
        title += f"; no curve for {len(genres) - len(defined)} without test positives or negatives"
    return title


def _finish(ax, xlabel: str, ylabel: str, title: str, *, legend_title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=_SMALL,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        borderaxespad=0,
        title=legend_title,
        title_fontsize=_SMALL,
        ncol=1 if len(ax.get_lines()) <= 32 else 2,
    )
    ax.set_aspect("equal")
