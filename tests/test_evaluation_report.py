"""Plots, the offline run report, and comparing runs (library and ``postergenre compare``)."""

from __future__ import annotations

import argparse
import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

from postergenre.errors import PosterGenreError
from postergenre.evaluation import plots
from postergenre.evaluation.compare import compare_runs, write_comparison
from postergenre.evaluation.metrics import evaluate_scores
from postergenre.evaluation.report import write_report

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]  # seven: an odd count


def scored(n: int = 200, genres=GENRES, seed: int = 0, signal: float = 1.0):
    """Labels, scores with some signal, and the metrics of evaluate_scores on them (one genre without positives)."""
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, len(genres))) < np.linspace(0.1, 0.5, len(genres))).astype(int)
    y_true[:, 3] = 0
    y_score = 1 / (1 + np.exp(-(rng.normal(size=y_true.shape) + signal * (2 * y_true - 1))))
    metrics = evaluate_scores(
        y_true, y_score, list(genres), np.full(len(genres), 0.4), train_prevalence=np.linspace(0.1, 0.5, len(genres))
    )
    return y_true, y_score, metrics


def write_run(folder, genres=GENRES, seed: int = 0, n: int = 200, model: dict | None = None):
    """A fake run folder: metrics.json from evaluate_scores on random data, and model.json if given."""
    folder.mkdir(parents=True)
    _, _, metrics = scored(n=n, genres=genres, seed=seed)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if model is not None:
        (folder / "model.json").write_text(json.dumps(model))
    return folder


def run_compare_cli(argv: list[str]) -> int:
    """``postergenre compare`` through its own parser (the CLI's other commands are not needed here)."""
    from postergenre.cli import compare

    parser = argparse.ArgumentParser(prog="postergenre")
    compare.add_parser(parser.add_subparsers())
    args = parser.parse_args(["compare", *argv])
    return args.run(args)


HISTORY = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.5, 0.4, 0.35], "val_macro_auc": [0.6, 0.65, 0.66]})


def test_report_files_and_self_contained_html(tmp_path):
    """Check write_report writes every PNG and an html page whose images are inline and that loads nothing."""
    y_true, y_score, metrics = scored()
    model_info = {"backbone": "mobilenet_v3", "mode": "multilabel", "genres": GENRES, "training": {"lr": 0.001}}
    path = write_report(
        tmp_path / "run",
        metrics,
        model_info=model_info,
        history=HISTORY,
        y_true=y_true,
        y_score=y_score,
        genres=GENRES,
        extra_sections=[("Explanations", "<p id='extra'>saliency goes here</p>")],
    )
    page = path.read_text()

    assert path == tmp_path / "run" / "report.html"
    for name in ("roc_curves.png", "pr_curves.png", "history.png", "per_genre.png"):
        assert (tmp_path / "run" / name).read_bytes()[:4] == b"\x89PNG", name
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert len(links) == 4 and all(link.startswith("data:image/png;base64,") for link in links)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "mobilenet_v3" in page and "Horror: no test positives" in page
    assert 'class="warnings"' in page and "<p id='extra'>saliency goes here</p>" in page
    assert page.count('class="flagged"') == len(metrics["genres_flagged"])
    assert "always yes" in page and "top 3" in page


def test_report_without_scores_or_history(tmp_path):
    """Check that without labels, scores and history the report still has the per-genre plot and says why."""
    _, _, metrics = scored()
    path = write_report(tmp_path, metrics, model_info={})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_genre.png", "report.html"]
    assert "No ROC or precision-recall curves" in path.read_text()


def test_report_marks_a_baseline_that_beats_the_model(tmp_path):
    """Check that a model with no signal gets its headline cells marked as beaten by a baseline."""
    _, _, metrics = scored(signal=0.0, seed=5)
    page = write_report(tmp_path, metrics, model_info={"name": "noise"}).read_text()

    assert 'class="beaten"' in page


@pytest.mark.parametrize("n_genres", [1, 7, 25])
def test_plots_return_figures_for_any_genre_count(n_genres):
    """Check each plot draws for 1, 7 and 25 genres (the last without positives) and returns its Figure."""
    genres = GENRES[:n_genres] if n_genres <= len(GENRES) else [f"Genre {k}" for k in range(n_genres)]
    rng = np.random.default_rng(0)
    y_true = (rng.random((80, n_genres)) < 0.3).astype(int)
    if n_genres > 1:
        y_true[:, -1] = 0
    y_score = rng.random((80, n_genres))
    metrics = evaluate_scores(y_true, y_score, genres, np.full(n_genres, 0.5), train_prevalence=np.full(n_genres, 0.3))

    for fig in (
        plots.plot_roc_curves(y_true, y_score, genres),
        plots.plot_pr_curves(y_true, y_score, genres),
        plots.plot_per_genre(metrics),
        plots.plot_history(HISTORY),
    ):
        assert len(fig.axes) >= 1
        fig.canvas.draw()


def test_plot_on_a_given_axis_and_max_genres():
    """Check a plot draws on the ax it is given and max_genres limits the genre curves drawn."""
    from matplotlib.figure import Figure

    y_true, y_score, metrics = scored()
    fig = Figure()
    ax = fig.add_subplot()
    returned = plots.plot_roc_curves(
        y_true, y_score, GENRES, ax=ax, max_genres=2, genres_in_macro=metrics["genres_in_macro"]
    )

    labels = [line.get_label() for line in ax.get_lines()]
    assert returned is fig
    assert len(labels) == 2 + 2  # two genres, the macro average and chance
    assert any(label.startswith(f"macro average of {len(metrics['genres_in_macro'])}") for label in labels)


def test_plot_history_with_some_columns():
    """Check the history plot draws only the columns present, and says so when none is usable."""
    fig = plots.plot_history(pd.DataFrame({"epoch": [1, 2], "loss": [0.3, 0.2]}))
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["loss"]

    empty = plots.plot_history(pd.DataFrame({"epoch": [1, 2], "seconds": [3.0, 2.9]}))
    assert "no loss or validation columns" in empty.axes[0].texts[0].get_text()


def test_compare_two_runs_prints_and_writes(tmp_path, capsys):
    """Check compare on two run folders prints both tables and writes compare.csv, .png and .html."""
    first = write_run(
        tmp_path / "a", seed=1, model={"name": "lite0", "backbone": "efficientnet_lite0", "mode": "multilabel"}
    )
    second = write_run(tmp_path / "b", seed=2)

    assert run_compare_cli([str(first), str(second), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv", index_col="run")
    first_metrics = json.loads((first / "metrics.json").read_text())

    lines = out.splitlines()
    assert lines[0].split()[:6] == ["run", "backbone", "mode", "text", "test", "posters"] and "macro AUC" in lines[0]
    assert lines[1].startswith("lite0") and lines[2].lstrip().startswith("b ")
    assert "Per-genre ROC AUC (7 genres):" in out and re.search(r"Horror\s+n/a\s+n/a", out)
    assert list(table.index) == ["lite0", "b"]
    assert table.loc["lite0", "macro AUC"] == pytest.approx(first_metrics["macro_roc_auc"])
    assert table.loc["lite0", "n genres"] == len(first_metrics["genres_in_macro"])
    assert table.loc["lite0", "backbone"] == "efficientnet_lite0"
    assert table.loc["lite0", "text"] == "no"  # its model.json has no text entry: an image-only model
    per_genre = pd.read_csv(tmp_path / "cmp" / "compare_per_genre.csv", index_col="genre")
    assert per_genre.shape == (7, 2) and per_genre.loc["Horror"].isna().all()
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert all(link.startswith("data:") for link in re.findall(r"""(?:src|href)=["']([^"']*)""", page))


def test_compare_runs_over_different_genres(tmp_path, caplog):
    """Check runs over different genres are compared on the shared ones, macro recomputed there, and it says so."""
    first = write_run(tmp_path / "a", genres=GENRES, seed=1)
    second = write_run(tmp_path / "b", genres=[*GENRES[:5], "Thriller", "War"], seed=2)
    with caplog.at_level(logging.WARNING):
        comparison = compare_runs([first, second])

    first_rows = {r["genre"]: r for r in json.loads((first / "metrics.json").read_text())["per_genre"]}
    shared = ["Action", "Comedy", "Drama", "Romance"]  # Horror has no test positives
    assert comparison.common_genres == GENRES[:5] and comparison.shared_macro_genres == shared
    assert list(comparison.per_genre_auc.index) == GENRES[:5]
    assert comparison.headline.loc["a", "macro AUC"] == pytest.approx(
        np.mean([first_rows[g]["roc_auc"] for g in shared])
    )
    assert comparison.headline.loc["a", "n genres"] == 4
    assert "compared on the 5 genres they share" in caplog.text
    assert "a also has Sci-Fi, Western; b also has Thriller, War" in comparison.notes[0]
    assert "Horror: too few test positives" in comparison.notes[-1]


def test_compare_takes_macro_over_genres_every_run_scores(tmp_path):
    """Check a genre flagged in one run only is left out of every run's macro figures, with a note."""
    first = write_run(tmp_path / "a", seed=1)
    metrics = json.loads((first / "metrics.json").read_text())
    metrics["per_genre"][0]["flagged"] = True  # as if Action had few test positives in this run
    metrics["genres_in_macro"].remove("Action")
    (first / "metrics.json").write_text(json.dumps(metrics))
    second = write_run(tmp_path / "b", seed=2)
    comparison = compare_runs([first, second])

    second_rows = {r["genre"]: r for r in json.loads((second / "metrics.json").read_text())["per_genre"]}
    assert "Action" not in comparison.shared_macro_genres
    shared_auc = np.mean([second_rows[g]["roc_auc"] for g in comparison.shared_macro_genres])
    assert comparison.headline.loc["b", "macro AUC"] == pytest.approx(shared_auc)
    assert any("every run scores reliably" in note for note in comparison.notes)


def test_compare_notes_different_test_sets(tmp_path):
    """Check a note when runs were evaluated on different numbers of test posters."""
    comparison = compare_runs([write_run(tmp_path / "a", n=200), write_run(tmp_path / "b", n=150)])

    assert any("different numbers of test posters" in note for note in comparison.notes)


def test_compare_names_alike_runs_by_folder(tmp_path):
    """Check two runs whose model.json share a name are told apart by their folders."""
    first = write_run(tmp_path / "a", model={"name": "same"})
    second = write_run(tmp_path / "b", seed=3, model={"name": "same"})
    comparison = compare_runs([first, second])
    paths = write_comparison(comparison, tmp_path / "out")

    assert list(comparison.headline.index) == [str(first), str(second)]
    assert paths["html"].is_file()


def test_compare_missing_metrics_says_what_to_run(tmp_path):
    """Check a run folder without metrics.json gives one error naming it and the evaluate command."""
    good = write_run(tmp_path / "a")
    (tmp_path / "untested").mkdir()
    with pytest.raises(
        PosterGenreError, match=r"untested: no metrics.json; run `postergenre evaluate .*untested` first"
    ):
        run_compare_cli([str(good), str(tmp_path / "untested")])


def test_compare_rejects_a_missing_folder_and_bad_json(tmp_path):
    """Check a folder that does not exist and a broken metrics.json each give an error naming the path."""
    with pytest.raises(PosterGenreError, match="nowhere: no such run folder"):
        compare_runs([tmp_path / "nowhere"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    with pytest.raises(PosterGenreError, match=r"broken.metrics.json: not valid JSON"):
        compare_runs([tmp_path / "broken"])
