"""Which genre columns are trained and evaluated: N/A and rare genres are left out, with the reason."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from postergenre.data.dataset import load_dataset
from postergenre.data.genres import DEFAULT_MIN_POSITIVES, GenreSelection, select_genres
from postergenre.errors import DataError


def _labels(positives: dict[str, int], n: int = 60) -> pd.DataFrame:
    """``n`` posters where each genre has the given number of positives (the first ones)."""
    data = {g: (np.arange(n) < k).astype("int8") for g, k in positives.items()}
    return pd.DataFrame(data, index=pd.Index([f"tt{k:07d}" for k in range(n)], name="Id"))


def test_keeps_frequent_genres_in_csv_order():
    """Check that genres with enough positives are all kept, in the columns' order, with nothing dropped."""
    selection = select_genres(_labels({"Western": 12, "Action": 40, "Drama": 10}))
    assert selection.kept == ["Western", "Action", "Drama"]
    assert selection.dropped == {} and selection.message() is None


def test_na_is_left_out_with_its_reason():
    """Check that N/A is left out however many positives it has, and says why."""
    selection = select_genres(_labels({"Action": 30, "N/A": 50}))
    assert selection.kept == ["Action"]
    assert selection.dropped == {"N/A": "marks a poster with no genre, not a genre"}


def test_rare_genres_are_left_out_with_their_count():
    """Check that genres under min_positives are left out with their count and the minimum in the reason."""
    selection = select_genres(_labels({"Action": 30, "News": 3, "Reality-TV": 0, "Short": 9}))
    assert selection.kept == ["Action"]
    assert selection.dropped == {
        "News": "3 positives, fewer than the minimum of 10",
        "Reality-TV": "0 positives, fewer than the minimum of 10",
        "Short": "9 positives, fewer than the minimum of 10",
    }
    assert selection.message() == (
        "3 genres are left out of training and evaluation: News (3 positives, fewer than the minimum of 10); "
        "Reality-TV (0 positives, fewer than the minimum of 10); Short (9 positives, fewer than the minimum of 10)"
    )


def test_min_positives_is_a_floor():
    """Check that a genre with exactly min_positives positives is kept and one fewer is not."""
    selection = select_genres(_labels({"A": 5, "B": 4, "C": 20}), min_positives=5)
    assert selection.kept == ["A", "C"] and list(selection.dropped) == ["B"]
    assert DEFAULT_MIN_POSITIVES == 10
    assert select_genres(_labels({"A": 1, "B": 0}), min_positives=1).kept == ["A"]


def test_seven_genres(tiny_dataset):
    """Check that an odd number of genres (7) from a written dataset comes through whole when all are frequent."""
    labels = load_dataset(tiny_dataset).labels
    selection = select_genres(labels, min_positives=1)
    assert selection.kept == list(labels.columns) and len(selection.kept) == 7


def test_nothing_left_is_an_error():
    """Check that a DataError names every genre's reason and the remedy when no genre is left."""
    with pytest.raises(DataError, match=r"no genre is left to train on: A \(3 positives.*\); N/A \(marks a") as e:
        select_genres(_labels({"A": 3, "N/A": 40}))
    assert str(e.value).endswith("lower --min-positives or use a larger dataset")
    with pytest.raises(DataError, match=r"no genre is left to train on: no genre columns"):
        select_genres(_labels({}))


def test_selection_is_logged(caplog):
    """Check that left-out genres are logged with the option that changes the minimum."""
    with caplog.at_level(logging.INFO, logger="postergenre.data.genres"):
        select_genres(_labels({"A": 30, "B": 2}))
    assert "B (2 positives, fewer than the minimum of 10)" in caplog.text and "--min-positives" in caplog.text


def test_message_lists_dropped_genres():
    """Check that GenreSelection.message counts and lists what was dropped."""
    assert GenreSelection(["A"], {"B": "why"}).message() == "1 genres are left out of training and evaluation: B (why)"
