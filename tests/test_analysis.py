"""The data analysis: its numbers, its plots and page, and the ``analyze`` command."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import numpy as np
import pytest
from conftest import write_dataset
from PIL import Image

from postergenre.analysis import plots
from postergenre.analysis.report import PLOT_FILES, TELLING_WORDS_FILE
from postergenre.analysis.stats import telling_words_stats
from postergenre.cli import main
from postergenre.data.dataset import load_dataset
from postergenre.text.ocr import TextLine

GENRES = ["Action", "Comedy", "Drama"]
LABELS = {
    "tt0000001": ["Action"],
    "tt0000002": ["Action", "Comedy"],
    "tt0000003": ["Comedy", "Drama"],
    "tt0000004": ["Action", "Comedy", "Drama"],
    "tt0000005": ["Drama"],
}
UNLABELLED = "tt0000099"


def write_known_dataset(root):
    """Five labelled posters, one CSV row repeated, and an unlabelled poster identical to tt0000001's."""
    write_dataset(root, LABELS, GENRES)
    csv = root / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines[:3], lines[2], *lines[3:]]) + "\n")  # tt0000002 twice, side by side
    shutil.copyfile(root / "images" / "tt0000001.jpg", root / "images" / f"{UNLABELLED}.jpg")
    return root


@pytest.fixture
def known_dataset(tmp_path):
    """The hand-made dataset, for a test that changes it."""
    return write_known_dataset(tmp_path / "known")


@pytest.fixture(scope="module")
def known_analysis(tmp_path_factory):
    """The hand-made dataset and the output folder of one analysis of it, shared by the tests that only read."""
    root = write_known_dataset(tmp_path_factory.mktemp("known"))
    out = root.parent / "known-analysis"
    return root, out, run_analysis(root, out)


def run_analysis(data, out, *extra) -> dict:
    code = main(["-q", "analyze", str(data), "--out", str(out), *extra])
    assert code == 0
    return json.loads((out / "analysis.json").read_text())


def test_counts_of_a_known_dataset(known_analysis):
    """Check rows, ids, posters, duplicates and unlabelled posters of a hand-made dataset."""
    _, _, stats = known_analysis
    assert stats["rows"] == 6
    assert stats["unique_ids"] == 5
    assert stats["images"] == 6
    assert stats["images_without_labels"] == {"count": 1, "first_ids": [UNLABELLED]}
    assert stats["duplicate_rows"] == 1
    assert stats["duplicate_ids"] == ["tt0000002"]
    assert stats["identical_poster_groups"] == [["tt0000001", UNLABELLED]]
    assert stats["near_identical_pairs"] == []
    assert stats["duplicate_poster_genres"] == {"tt0000001": ["Action"], UNLABELLED: None}
    assert stats["undecodable_posters"] == []
    assert len(stats["warnings"]) == 1
    assert re.search(r"duplicate rows.*tt0000002", stats["warnings"][0])


def test_label_statistics_of_a_known_dataset(known_analysis):
    """Check genre counts, labels per poster, pairs and co-occurrence, counted over CSV rows."""
    _, _, stats = known_analysis
    assert stats["genre_counts"] == {"Action": 4, "Comedy": 4, "Drama": 3}
    assert list(stats["genre_counts"]) == ["Action", "Comedy", "Drama"]
    assert stats["labels_per_poster"] == {"1": 2, "2": 3, "3": 1}
    assert stats["top_genre_pairs"] == [
        {"genres": ["Action", "Comedy"], "count": 3},
        {"genres": ["Comedy", "Drama"], "count": 2},
        {"genres": ["Action", "Drama"], "count": 1},
    ]
    assert stats["cooccurrence"] == [[4, 3, 1], [3, 4, 2], [1, 2, 3]]
    left_out = stats["genres_left_out"]
    assert left_out["kept"] == [] and set(left_out["dropped"]) == set(GENRES)
    assert "fewer than the minimum of 10" in left_out["dropped"]["Drama"]


def test_image_sizes_of_a_known_dataset(known_analysis):
    """Check size statistics and byte totals of posters that are all 40x60."""
    root, _, stats = known_analysis
    sizes = stats["image_sizes"]
    assert sizes["width"] == {"min": 40, "median": 40, "max": 40}
    assert sizes["height"] == {"min": 60, "median": 60, "max": 60}
    assert sizes["aspect_ratio"]["median"] == 1.5
    assert sizes["most_common"] == [{"width": 40, "height": 60, "count": 6}]
    folder = root / "images"
    assert sizes["total_bytes"] == sum(p.stat().st_size for p in folder.iterdir())


def test_writes_every_plot_and_an_offline_page(tiny_dataset, tmp_path):
    """Check that every PNG is written and the HTML embeds them all with no external reference."""
    out = tmp_path / "out"
    stats = run_analysis(tiny_dataset, out)
    for file in PLOT_FILES.values():
        with Image.open(out / file) as image:
            assert image.format == "PNG" and image.width > 300
    page = (out / "analysis.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert page.count("data:image/png;base64,") == len(PLOT_FILES)
    assert not re.search(r"https?://|<link|@import|url\(", page)
    assert f"{stats['rows']:,}" in page and "Sci-Fi" in page


def test_duplicate_groups_shown_with_thumbnails(known_analysis):
    """Check that the page shows both posters of the identical pair as embedded thumbnails."""
    _, out, _ = known_analysis
    page = (out / "analysis.html").read_text()
    group = re.search(r'<div class="group">(.*?)</div>', page).group(1)
    assert group.count('src="data:image/jpeg;base64,') == 2
    assert "tt0000001" in group and UNLABELLED in group and "no labels" in group


def test_missing_csv_is_a_one_line_error(tmp_path, capsys):
    """Check that a dataset folder without train.csv exits 2 with one line naming the file."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    code = main(["-q", "analyze", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert re.match(r"error: .*train\.csv: CSV file not found", err)
    assert not (tmp_path / "out").exists()


def test_undecodable_labelled_poster_stops_without_skip(known_dataset, tmp_path, capsys):
    """Check that a labelled poster that will not decode is an error unless --skip-missing is given."""
    (known_dataset / "images" / "tt0000003.jpg").write_bytes(b"not a jpeg")
    code = main(["-q", "analyze", str(known_dataset), "--out", str(tmp_path / "out")])
    assert code == 2
    assert re.search(r"1 posters cannot be decoded.*tt0000003\.jpg.*--skip-missing", capsys.readouterr().err)

    stats = run_analysis(known_dataset, tmp_path / "out", "--skip-missing")
    assert [(u["id"], u["labelled"]) for u in stats["undecodable_posters"]] == [("tt0000003", True)]
    assert stats["labelled_ids_without_usable_poster"]["first_ids"] == ["tt0000003"]
    assert any("cannot be decoded" in w for w in stats["warnings"])


def test_undecodable_unlabelled_poster_is_only_reported(known_dataset, tmp_path, capsys):
    """Check that an unlabelled poster that will not decode is listed, and the command succeeds."""
    (known_dataset / "images" / "tt0000098.jpg").write_bytes(b"")
    stats = run_analysis(known_dataset, tmp_path / "out")
    assert [(u["id"], u["labelled"]) for u in stats["undecodable_posters"]] == [("tt0000098", False)]
    assert stats["images"] == 7 and stats["image_sizes"]["decodable"] == 6
    assert "tt0000098" in capsys.readouterr().out


def test_summary_names_the_page(tiny_dataset, tmp_path, capsys):
    """Check that the command prints where analysis.html is and the headline counts."""
    run_analysis(tiny_dataset, tmp_path / "out")
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out' / 'analysis.html'}" in out
    assert "40 CSV rows, 40 unique ids" in out


def test_conditional_cooccurrence_divides_each_row_by_its_genre():
    """Check P(column | row) on a small matrix, with a genre that has no posters."""
    share = plots.conditional_cooccurrence([[4, 2, 0], [2, 8, 0], [0, 0, 0]])
    np.testing.assert_allclose(share[:2], [[1, 0.5, 0], [0.25, 1, 0]])
    assert np.isnan(share[2]).all()


def test_plots_draw_into_a_given_axes():
    """Check that each plot draws into the axes it is given and returns it."""
    left, right = plots.new_axes((8, 4), ncols=2)
    assert plots.genre_counts({"Drama": 5, "Comedy": 3}, ax=left) is left
    assert [t.get_text() for t in left.get_yticklabels()] == ["Comedy", "Drama"]
    assert plots.aspect_ratios([[40, 60, 3], [60, 40, 1]], ax=right) is right
    assert sum(p.get_height() for p in right.patches) == 4


# ---- the words on the posters (analyze --text) -----------------------------------------------

needs_ocr = pytest.mark.skipif(importlib.util.find_spec("rapidocr_onnxruntime") is None, reason="needs the text extra")
WORD_GENRES = ["Horror", "Comedy", "Drama"]
N_WORD_POSTERS = 21


def _lines(*texts: str) -> list[TextLine]:
    return [TextLine(t, 0.95, ((10, 20 + 30 * k), (90, 20 + 30 * k), (90, 40 + 30 * k), (10, 40 + 30 * k)))
            for k, t in enumerate(texts)]  # fmt: skip


def word_dataset(root):
    """Seven posters per genre (some Drama ones also Comedy); every Horror poster says NIGHTMARE.

    Returns the dataset folder and the OCR lines of each poster: NIGHTMARE on the six Horror
    posters with text, ELM STREET on three of them, other words for the other genres, a line
    every poster shares, and the last poster of each genre blank.
    """
    labels = {f"tt{k:07d}": [WORD_GENRES[k % 3]] + (["Comedy"] if k % 3 == 2 and k % 2 else []) for k in range(21)}
    write_dataset(root, labels, WORD_GENRES)
    ocr = {}
    for k, (id_, genres) in enumerate(labels.items()):
        words = {"Horror": ["NIGHTMARE"] + (["ELM STREET"] if k % 2 else []), "Comedy": ["SUMMER LAUGHS"]}
        ocr[id_] = _lines(*words.get(genres[0], ["A TRUE STORY"]), "COMING SOON") if k < 18 else []
    return root, ocr


def seed_ocr_cache(root, ocr: dict[str, list[TextLine]]) -> None:
    """Store these lines as the default-settings OCR of each poster, as a run of ``postergenre ocr`` would."""
    from postergenre.records import sha256_hex
    from postergenre.text.ocr import OcrSettings, _to_record, open_ocr_store

    store = open_ocr_store(OcrSettings())
    store.append(
        (sha256_hex((root / "images" / f"{i}.jpg").read_bytes()), _to_record(lines)) for i, lines in ocr.items()
    )


def test_telling_words_stats_count_posters_per_word(tmp_path):
    """Check NIGHTMARE tops Horror with its poster counts, blank posters count as read, and thin genres warn."""
    root, ocr = word_dataset(tmp_path / "words")

    found = telling_words_stats(load_dataset(root), ocr)

    horror = found["genres"]["Horror"]
    assert horror["words"][0] == {"word": "nightmare", "score": horror["words"][0]["score"], "posters": 6,
                                  "all_posters": 6}  # fmt: skip
    assert horror["words"][0]["score"] > 0 and [w["word"] for w in horror["words"]][1:] == ["elm", "street"]
    assert found["genres"]["Comedy"]["words"][0]["word"] in ("summer", "laughs")
    assert (horror["posters"], horror["posters_with_text"]) == (7, 6)
    assert (found["posters_read"], found["posters_with_text"]) == (N_WORD_POSTERS, 18)
    listed = {w["word"] for entry in found["genres"].values() for w in entry["words"]}
    assert not listed & {"a", "coming", "soon"}  # a stop word, and a line on every poster
    assert found["warnings"] == [
        f"{genre}: {n} posters with text (fewer than 10); its words say little"
        for genre, n in (("Horror", 6), ("Comedy", 9), ("Drama", 6))  # Comedy: 6 of its own, 3 also Drama
    ]


@needs_ocr
def test_analyze_text_reports_the_words_from_cached_ocr(tmp_path, monkeypatch, capsys):
    """Check --text puts the words in analysis.json, a plot and a section in the page, reading OCR from the cache."""
    from postergenre.text import ocr as ocr_module

    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "cache"))
    root, ocr = word_dataset(tmp_path / "words")
    seed_ocr_cache(root, ocr)
    monkeypatch.setattr(ocr_module, "OcrEngine", lambda *a, **k: pytest.fail("OCR ran on a cached poster"))

    stats = run_analysis(root, tmp_path / "out", "--text")

    found = stats["telling_words"]
    assert found["genres"]["Horror"]["words"][0]["word"] == "nightmare"
    assert found["ocr"]["cached"] == N_WORD_POSTERS and found["ocr"]["read_now"] == 0
    assert found["ocr"]["settings"] == ocr_module.OcrSettings().to_dict()
    with Image.open(tmp_path / "out" / TELLING_WORDS_FILE) as image:
        assert image.format == "PNG" and image.width > 600
    page = (tmp_path / "out" / "analysis.html").read_text()
    section = page.split("<h2>Words on the posters</h2>")[1].split("<h2>")[0]
    assert 'alt="telling words per genre" src="data:image/png;base64,' in section
    assert '<td>Horror</td><td class="num">6</td><td>nightmare (' in section
    assert "Horror: 6 posters with text (fewer than 10)" in section
    out = capsys.readouterr().out
    assert f"text of {N_WORD_POSTERS} posters ({N_WORD_POSTERS} cached, 0 read now), 18 with text" in out
    assert "most telling word per genre: Horror nightmare" in out


def test_analyze_without_text_says_how_to_get_the_words(known_analysis):
    """Check a plain analysis leaves telling_words null, draws no words plot and says how to get the section."""
    _, out, stats = known_analysis
    assert stats["telling_words"] is None
    assert not (out / TELLING_WORDS_FILE).exists()
    section = (out / "analysis.html").read_text().split("<h2>Words on the posters</h2>")[1].split("<h2>")[0]
    assert "postergenre analyze DATA --text" in section and "pip install &#x27;postergenre[text]&#x27;" in section


def test_analyze_text_without_the_extra_names_the_install(known_dataset, tmp_path, monkeypatch, capsys):
    """Check --text without the OCR package is a one-line error with the pip command, before any output."""
    from postergenre.text import ocr as ocr_module

    def missing():
        raise ImportError("no rapidocr")

    monkeypatch.setattr(ocr_module, "package_version", missing)
    assert main(["-q", "analyze", str(known_dataset), "--out", str(tmp_path / "out"), "--text"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'postergenre[text]'" in err and "without --text" in err
    assert not (tmp_path / "out").exists()


def test_word_bars_draw_into_a_given_axes():
    """Check one genre's word bars go into the axes given, strongest on top, and an empty list says so."""
    top, empty = plots.new_axes((8, 3), ncols=2)
    entries = [{"word": "fear", "score": 3.0, "posters": 5}, {"word": "night", "score": 1.5, "posters": 2}]
    assert plots.word_bars(entries, ax=top, posters_with_text=9, slots=4, max_score=6.0) is top
    heights = {label.get_text(): y for label, y in zip(top.get_yticklabels(), top.get_yticks(), strict=True)}
    assert heights["fear"] > heights["night"]
    assert sorted(p.get_width() for p in top.patches) == [1.5, 3.0]
    assert top.get_xlim()[1] > 6.0 and top.get_ylim() == (-0.6, 3.6)  # the shared scale and room for 4 bars
    assert "5/9" in [t.get_text().strip() for t in top.texts]
    plots.word_bars([], ax=empty)
    assert [t.get_text() for t in empty.texts] == ["no telling word"]


@needs_ocr
def test_analyze_text_with_too_few_posters_says_so(tmp_path, monkeypatch):
    """Check posters sharing no word give a warning and no plot, and an earlier run's words plot is removed."""
    monkeypatch.setenv("POSTERGENRE_CACHE_DIR", str(tmp_path / "cache"))
    root, ocr = word_dataset(tmp_path / "words")
    seed_ocr_cache(root, {id_: _lines(f"TITLE{chr(97 + k)}") for k, id_ in enumerate(ocr)})  # one word each
    out = tmp_path / "out"
    out.mkdir()
    (out / TELLING_WORDS_FILE).write_bytes(b"stale")

    found = run_analysis(root, out, "--text")["telling_words"]

    assert found["words_counted"] == 0 and all(not g["words"] for g in found["genres"].values())
    assert found["warnings"][0].startswith("no word is on 3 posters or more (of 21 with text)")
    assert not (out / TELLING_WORDS_FILE).exists()
    assert "no genre has telling words" in (out / "analysis.html").read_text()


@pytest.fixture(scope="module")
def _shared_results():
    return {}


@pytest.fixture
def shared_analysis(shared_dataset, _shared_results, tmp_path_factory):
    """The analysis of the real dataset, run once for the whole module."""
    if "stats" not in _shared_results:
        out = tmp_path_factory.mktemp("shared-analysis")
        _shared_results["stats"] = run_analysis(shared_dataset, out)
    return _shared_results["stats"]


SOURCE_GENRE_COUNTS = {
    "Drama": 3619, "Comedy": 2900, "Action": 1343, "Romance": 1334, "Crime": 1176, "Thriller": 918,
    "Adventure": 870, "Documentary": 652, "Horror": 503, "Fantasy": 467, "Mystery": 454, "Biography": 441,
    "Family": 434, "Sci-Fi": 399, "Music": 305, "Animation": 244, "History": 224, "Sport": 221, "War": 144,
    "Musical": 97, "Western": 50, "Short": 46, "News": 21, "N/A": 10, "Reality-TV": 2,
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.shared_data
def test_shared_dataset_matches_its_source_note(shared_analysis):
    """Check the real dataset's counts, duplicates and genre counts against its SOURCE.md."""
    stats = shared_analysis
    assert stats["rows"] == 7254
    assert stats["unique_ids"] == 7242
    assert stats["duplicate_rows"] == 12
    assert stats["images"] == 7867
    assert stats["images_without_labels"]["count"] == 625
    assert stats["identical_poster_groups"] == [
        ["tt0372763", "tt0436070"],
        ["tt0402577", "tt0420286"],
        ["tt2072230", "tt4294052"],
    ]
    assert stats["genre_counts"] == SOURCE_GENRE_COUNTS
    assert list(stats["genre_counts"]) == list(SOURCE_GENRE_COUNTS)
    assert stats["labels_per_poster"] == {"1": 1322, "2": 2244, "3": 3688}
    assert stats["undecodable_posters"] == []
