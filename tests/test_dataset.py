"""Loading and validating a poster dataset: every bad input gives a message naming file, line, id and column."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_dataset, write_poster

from postergenre.cli.common import load_dataset_from_args
from postergenre.data.dataset import drop_images, load_dataset
from postergenre.data.images import scan_images
from postergenre.errors import DataError, PosterGenreError

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western"]
HEADER = "Id,Genre," + ",".join(GENRES)


def _row(id_: str, marked: list[str], listed: list[str] | None = None) -> str:
    """One CSV line; ``listed`` (default: ``marked``) goes in the Genre column."""
    listed = marked if listed is None else listed
    text = '"[' + ", ".join(f"'{g}'" for g in listed) + ']"'
    return f"{id_},{text}," + ",".join("1" if g in marked else "0" for g in GENRES)


def _dataset(root: Path, lines: list[str], ids: list[str] | None = None) -> Path:
    """A dataset folder whose train.csv is exactly ``lines`` (header included) and posters for ``ids``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    for k, id_ in enumerate(ids or []):
        write_poster(root / "images" / f"{id_}.jpg", seed=k)
    return root


def _five(root: Path) -> Path:
    """Five good rows, tt0000000 to tt0000004, each with a poster."""
    labels = {
        "tt0000000": ["Action", "Comedy"],
        "tt0000001": ["Drama"],
        "tt0000002": ["Horror", "Sci-Fi", "Western"],
        "tt0000003": ["Romance"],
        "tt0000004": ["Comedy", "Drama"],
    }
    return write_dataset(root, labels, GENRES)


def _replace_line(root: Path, line: int, text: str) -> None:
    """Replace one line (1 = header) of the dataset's train.csv."""
    lines = (root / "train.csv").read_text().splitlines()
    lines[line - 1] = text
    (root / "train.csv").write_text("\n".join(lines) + "\n")


# --- good data ---------------------------------------------------------------------------------


def test_loads_tiny_dataset(tiny_dataset):
    """Check that a well-formed dataset loads with 0/1 int8 labels, its genres in CSV order and no warnings."""
    dataset = load_dataset(tiny_dataset)
    assert dataset.genres == GENRES
    assert dataset.labels.shape == (40, 7)
    assert dataset.labels.index.name == "Id"
    assert (dataset.labels.dtypes == "int8").all()
    assert set(pd.unique(dataset.labels.to_numpy().ravel())) <= {0, 1}
    assert dataset.ids == list(dataset.labels.index)
    assert set(dataset.image_paths) == set(dataset.ids)
    assert dataset.n_rows == 40 and dataset.duplicate_rows == 0 and dataset.duplicate_ids == []
    assert dataset.missing_images == [] and dataset.unlabelled_images == {} and dataset.warnings == []
    assert dataset.csv_path == tiny_dataset / "train.csv" and dataset.images_dir == tiny_dataset / "images"


def test_labels_follow_the_01_columns(tmp_path):
    """Check that each id's labels are exactly the genres its row marks with 1."""
    dataset = load_dataset(_five(tmp_path / "d"))
    assert dataset.labels.loc["tt0000002"].to_dict() == {g: int(g in ("Horror", "Sci-Fi", "Western")) for g in GENRES}
    assert dataset.labels.sum().to_dict() == {
        "Action": 1,
        "Comedy": 2,
        "Drama": 2,
        "Horror": 1,
        "Romance": 1,
        "Sci-Fi": 1,
        "Western": 1,
    }


def test_spaces_around_values_are_ignored(tmp_path):
    """Check that spaces after commas and around ids do not make a value invalid."""
    root = _dataset(tmp_path / "d", [HEADER.replace(",", ", "), " tt0000001 , \"['Drama']\", 0, 0, 1, 0, 0, 0, 0"])
    write_poster(root / "images" / "tt0000001.jpg", seed=0)
    dataset = load_dataset(root)
    assert dataset.ids == ["tt0000001"] and dataset.genres == GENRES
    assert dataset.labels.loc["tt0000001", "Drama"] == 1


def test_blank_lines_are_skipped_and_lines_still_counted(tmp_path):
    """Check that blank lines are skipped and a later error still names the right line of the file."""
    lines = [HEADER, _row("tt0000001", ["Drama"]), "", "", _row("tt0000002", ["Comedy"]).replace(",1,", ",2,")]
    root = _dataset(tmp_path / "d", lines, ["tt0000001", "tt0000002"])
    with pytest.raises(DataError, match=r"line 5, id tt0000002, column Comedy: value '2' is not 0 or 1"):
        load_dataset(root)
    _replace_line(root, 5, _row("tt0000002", ["Comedy"]))
    assert load_dataset(root).n_rows == 2


def test_windows_line_endings_and_bom(tmp_path):
    """Check that a CSV saved with CRLF line endings and a UTF-8 byte-order mark loads."""
    root = _five(tmp_path / "d")
    text = (root / "train.csv").read_text()
    (root / "train.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert len(load_dataset(root).labels) == 5


# --- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2", "yes", "", "1.0", "-1", "true"])
def test_value_other_than_0_or_1(tmp_path, value):
    """Check that a genre cell other than 0/1 is an error naming file, line, id, column and value."""
    root = _five(tmp_path / "d")
    _replace_line(root, 4, _row("tt0000002", ["Horror"]).rsplit(",", 1)[0] + f",{value}")
    with pytest.raises(DataError, match="0 or 1") as info:
        load_dataset(root)
    message = str(info.value)
    assert message.startswith(str(root / "train.csv"))
    assert f"line 4, id tt0000002, column Western: value {value!r} is not 0 or 1" in message
    assert "genre columns must hold 0 or 1" in message


def test_several_bad_values_are_counted(tmp_path):
    """Check that the message names the first bad cell and counts the others."""
    root = _five(tmp_path / "d")
    _replace_line(root, 3, "tt0000001,\"['Drama']\",x,0,1,0,0,0,y")
    _replace_line(root, 5, "tt0000003,\"['Romance']\",0,0,0,0,1,0,z")
    with pytest.raises(DataError, match=r"line 3, id tt0000001, column Action: value 'x'.*\(2 more bad cells\)"):
        load_dataset(root)


def test_genre_list_disagreeing_with_columns_warns(tmp_path, caplog):
    """Check that a Genre list that disagrees with the 0/1 columns warns (line, id, Genre) and the 0/1 values win."""
    root = _five(tmp_path / "d")
    _replace_line(root, 3, _row("tt0000001", ["Drama"], listed=["Drama", "Horror"]))
    with caplog.at_level(logging.WARNING, logger="postergenre.data.dataset"):
        dataset = load_dataset(root)
    assert len(dataset.warnings) == 1
    warning = dataset.warnings[0]
    assert "line 3, id tt0000001, column Genre" in warning
    assert "['Drama', 'Horror']" in warning and "mark ['Drama']" in warning
    assert "the 0/1 columns are used" in warning
    assert warning in caplog.text
    assert dataset.labels.loc["tt0000001", "Horror"] == 0 and dataset.labels.loc["tt0000001", "Drama"] == 1


def test_unreadable_genre_list_warns(tmp_path):
    """Check that a Genre cell that is no list warns as unreadable and the data stays usable."""
    root = _five(tmp_path / "d")
    _replace_line(root, 2, _row("tt0000000", ["Action", "Comedy"]).replace("\"['Action', 'Comedy']\"", "Action|Comedy"))
    _replace_line(root, 6, _row("tt0000004", ["Comedy", "Drama"], listed=["Comedy"]))
    dataset = load_dataset(root)
    assert dataset.warnings == [
        f"{root / 'train.csv'}: line 2, id tt0000000, column Genre: lists unreadable but the 0/1 columns mark "
        "['Action', 'Comedy'] (1 more rows disagree); the 0/1 columns are used, fix the CSV if they are wrong"
    ]
    assert len(dataset.ids) == 5


def test_without_genre_list_column(tmp_path):
    """Check that the Genre column is optional."""
    lines = ["Id," + ",".join(GENRES), "tt0000001,0,0,1,0,0,0,0", "tt0000002,1,0,0,0,0,0,1"]
    dataset = load_dataset(_dataset(tmp_path / "d", lines, ["tt0000001", "tt0000002"]))
    assert dataset.genres == GENRES and dataset.warnings == []


def test_empty_id(tmp_path):
    """Check that a row without an id is an error naming its line."""
    root = _five(tmp_path / "d")
    _replace_line(root, 4, _row("", ["Drama"]))
    with pytest.raises(DataError, match=r"train.csv: line 4: empty Id; every row needs an id"):
        load_dataset(root)


# --- duplicate ids -----------------------------------------------------------------------------


def test_identical_duplicate_rows_are_merged(tmp_path):
    """Check that identical repeated rows are merged into one id, counted, and noted in a warning."""
    lines = (_five(tmp_path / "d") / "train.csv").read_text().splitlines()
    root = tmp_path / "d"
    (root / "train.csv").write_text("\n".join([*lines, lines[2], lines[4], lines[2]]) + "\n")
    dataset = load_dataset(root)
    assert dataset.n_rows == 8 and len(dataset.labels) == 5 and len(dataset.row_labels) == 8
    assert dataset.duplicate_rows == 3 and dataset.duplicate_ids == ["tt0000001", "tt0000003"]
    assert dataset.labels.index.is_unique
    assert dataset.warnings == [
        f"{root / 'train.csv'}: 3 duplicate rows for 2 ids (tt0000001, tt0000003) are identical and were merged"
    ]


def test_conflicting_duplicate_rows_name_both_lines(tmp_path):
    """Check that one id with different genres on two lines is an error naming the id and both lines."""
    root = _five(tmp_path / "d")
    with (root / "train.csv").open("a") as f:
        f.write(_row("tt0000001", ["Drama", "Horror"]) + "\n")
    with pytest.raises(DataError, match=r"id tt0000001 appears on lines 3, 7 with different genres; keep one row"):
        load_dataset(root)


# --- images without rows, missing images -------------------------------------------------------


def test_images_without_a_row_are_counted_and_ignored(tmp_path):
    """Check that posters without a CSV row land in unlabelled_images and nowhere else."""
    root = _five(tmp_path / "d")
    write_poster(root / "images" / "tt9999998.jpg", seed=50)
    write_poster(root / "images" / "tt9999999.png", seed=51)
    (root / "images" / "notes.txt").write_text("not a poster")
    dataset = load_dataset(root)
    assert sorted(dataset.unlabelled_images) == ["tt9999998", "tt9999999"]
    assert dataset.unlabelled_images["tt9999999"] == root / "images" / "tt9999999.png"
    assert "tt9999998" not in dataset.labels.index and "tt9999998" not in dataset.image_paths
    assert len(dataset.ids) == 5 and dataset.warnings == []


def test_missing_images_are_an_error_with_count_and_first_ids(tmp_path):
    """Check that labelled ids without a poster are an error with the count, the first ids and the remedy."""
    labels = {f"tt{k:07d}": ["Drama"] for k in range(10)}
    root = write_dataset(tmp_path / "d", labels, GENRES, images=list(labels)[:3])
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert str(info.value) == (
        f"{root / 'images'}: 7 of 10 labelled ids have no poster file (tt0000003, tt0000004, tt0000005, "
        "tt0000006, tt0000007 and 2 more); add the files as <Id>.jpg or pass --skip-missing to go on without them"
    )


def test_skip_missing_goes_on_without_them(tmp_path, caplog):
    """Check that skip_missing=True warns and leaves the ids without posters out of ids and image_paths."""
    labels = {f"tt{k:07d}": ["Drama"] for k in range(4)}
    root = write_dataset(tmp_path / "d", labels, GENRES, images=["tt0000000", "tt0000002"])
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(root, skip_missing=True)
    assert dataset.ids == ["tt0000000", "tt0000002"]
    assert sorted(dataset.image_paths) == ["tt0000000", "tt0000002"]
    assert dataset.missing_images == ["tt0000001", "tt0000003"]
    assert dataset.warnings == [
        f"{root / 'images'}: 2 labelled ids have no poster file (tt0000001, tt0000003); they are left out "
        "(--skip-missing)"
    ]
    assert "2 labelled ids have no poster file" in caplog.text


def test_other_image_suffixes_count_as_posters(tmp_path):
    """Check that .png, .jpeg and upper-case .JPG posters are found."""
    labels = {"tt0000001": ["Drama"], "tt0000002": ["Comedy"], "tt0000003": ["Action"]}
    root = write_dataset(tmp_path / "d", labels, GENRES, images=[])
    write_poster(root / "images" / "tt0000001.png", seed=1)
    write_poster(root / "images" / "tt0000002.jpeg", seed=2)
    write_poster(root / "images" / "tt0000003.JPG", seed=3)
    dataset = load_dataset(root)
    assert {i: p.name for i, p in dataset.image_paths.items()} == {
        "tt0000001": "tt0000001.png",
        "tt0000002": "tt0000002.jpeg",
        "tt0000003": "tt0000003.JPG",
    }


# --- empty and non-CSV files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the CSV is empty; expected a header line starting with Id"),
        (b"\n\n  \n", "the CSV is empty; expected a header line starting with Id"),
        (HEADER.encode() + b"\n", "the CSV has a header but no data rows"),
        (HEADER.encode() + b"\n\n,,,,,,,,\n", "the CSV has a header but no data rows"),
    ],
    ids=["zero-bytes", "blank", "header-only", "header-and-empty-rows"],
)
def test_empty_csv(tmp_path, content, expected):
    """Check that an empty CSV, or one with a header only, is an error naming the file."""
    root = _five(tmp_path / "d")
    (root / "train.csv").write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{root / 'train.csv'}: {expected}")):
        load_dataset(root)


def test_missing_id_column(tmp_path):
    """Check that a header without Id is an error listing the columns found and the expected header."""
    root = _five(tmp_path / "d")
    _replace_line(root, 1, HEADER.replace("Id,", "Movie,"))
    with pytest.raises(
        DataError, match=r"no 'Id' column \(columns found: Movie, Genre, Action.*header such as Id,Genre,Action"
    ):
        load_dataset(root)


def test_no_genre_columns(tmp_path):
    """Check that a CSV with only Id and Genre is an error."""
    root = _dataset(tmp_path / "d", ["Id,Genre", "tt0000001,\"['Drama']\""], ["tt0000001"])
    with pytest.raises(DataError, match="no genre columns; expected one 0/1 column per genre after Id"):
        load_dataset(root)


def test_repeated_header_column(tmp_path):
    """Check that a genre named twice in the header is an error, not a made-up genre 'Action.1'."""
    root = _five(tmp_path / "d")
    _replace_line(root, 1, HEADER.replace("Comedy", "Action"))
    with pytest.raises(DataError, match=r"column 'Action' appears twice in the header \(columns 3 and 4\); keep one"):
        load_dataset(root)


def test_unnamed_header_column(tmp_path):
    """Check that an empty name in the header is an error naming the column's position."""
    root = _five(tmp_path / "d")
    _replace_line(root, 1, HEADER.replace(",Western", ","))
    with pytest.raises(DataError, match=r"column 9 of the header has no name; name it or remove it"):
        load_dataset(root)


def _jpeg_bytes(tmp_path: Path) -> bytes:
    write_poster(tmp_path / "poster.jpg", seed=3)
    return (tmp_path / "poster.jpg").read_bytes()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: bytes(range(256)) * 8, r"this is not a CSV file \(it holds binary data\)"),
        (_jpeg_bytes, r"this is not a CSV file \(it holds binary data\)"),
        (lambda tmp: "Id,Genre,Drame\ntt1,é,1\n".encode("latin-1"), r"this is not a UTF-8 CSV file .*; save it as"),
        (lambda tmp: b"%PDF-1.4 hello world\nfoo bar\n", r"no 'Id' column \(columns found: %PDF-1.4 hello world\)"),
        (
            lambda tmp: b"Id,Genre,Drama\n;;,,;;,a,b,c\nxx\n",
            r"line 2 has 6 fields but the header \(line 1\) has 3; every row needs one value per column",
        ),
    ],
    ids=["binary", "jpeg-renamed", "latin-1", "prose", "ragged"],
)
def test_file_that_is_not_a_csv(tmp_path, make, expected):
    """Check that binary bytes, a renamed JPEG, non-UTF-8 text and ragged garbage are errors naming the file."""
    root = _five(tmp_path / "d")
    (root / "train.csv").write_bytes(make(tmp_path))
    with pytest.raises(DataError, match=re.escape(str(root / "train.csv")) + ": " + expected):
        load_dataset(root)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tt0000009,\"['Drama']\",0,0,1,0,0,0,0,0", "line 4 has 10 fields but the header (line 1) has 9"),
        ("tt0000009,\"['Drama']\",0,0,1", "line 4 has 5 fields but the header (line 1) has 9"),
    ],
    ids=["too-long", "too-short"],
)
def test_row_with_wrong_field_count(tmp_path, line, expected):
    """Check that a row with too many or too few fields is an error naming its line."""
    root = _five(tmp_path / "d")
    _replace_line(root, 4, line)
    with pytest.raises(DataError, match=re.escape(expected) + ".*look for a stray comma or an unclosed quote"):
        load_dataset(root)


def test_unclosed_quote(tmp_path):
    """Check that an unclosed quote is an error naming its line, not a silent merge with the next rows."""
    root = _five(tmp_path / "d")
    _replace_line(root, 4, "tt0000002,\"['Horror',0,0,0,1,0,1,1")
    with pytest.raises(DataError, match=r"train.csv: line 4: a quoted value runs on to line 5; close the quote"):
        load_dataset(root)


# --- folders and overrides ---------------------------------------------------------------------


def test_capitalised_images_folder(tmp_path):
    """Check that a dataset whose posters are in Images/ (as in the published copy) loads."""
    root = write_dataset(tmp_path / "d", {"tt0000001": ["Drama"]}, GENRES, image_folder="Images")
    dataset = load_dataset(root)
    assert dataset.images_dir == root / "Images" and dataset.ids == ["tt0000001"]


def test_no_image_folder(tmp_path):
    """Check that a dataset folder without images/ is an error suggesting --images."""
    root = _five(tmp_path / "d")
    shutil.rmtree(root / "images")
    with pytest.raises(DataError, match=r"d: no poster folder found; expected images or Images/.*pass --images DIR"):
        load_dataset(root)


def test_csv_and_images_overrides(tmp_path):
    """Check that csv_path and images replace root/train.csv and root/images, with or without a root."""
    source = _five(tmp_path / "d")
    labels_csv = tmp_path / "elsewhere" / "labels.csv"
    labels_csv.parent.mkdir()
    shutil.move(source / "train.csv", labels_csv)
    posters = tmp_path / "posters"
    shutil.move(source / "images", posters)
    with_root = load_dataset(source, csv_path=labels_csv, images=posters)
    without_root = load_dataset(csv_path=labels_csv, images=posters)
    for dataset in (with_root, without_root):
        assert dataset.csv_path == labels_csv and dataset.images_dir == posters and len(dataset.ids) == 5


def test_csv_override_keeps_root_images(tmp_path):
    """Check that csv_path alone still finds the posters under root."""
    root = _five(tmp_path / "d")
    other = tmp_path / "other.csv"
    other.write_text("\n".join([HEADER, _row("tt0000001", ["Drama"])]) + "\n")
    dataset = load_dataset(root, csv_path=other)
    assert dataset.ids == ["tt0000001"] and len(dataset.unlabelled_images) == 4


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"csv_path": "labels.csv"}, r"give a dataset folder, or both --csv and --images"),
        ({"images": "posters"}, r"give a dataset folder, or both --csv and --images"),
        ({"root": "nowhere"}, r"nowhere: dataset folder not found; expected a folder with train.csv and images/"),
        ({"root": "d/train.csv"}, r"train.csv: this is a file, not a dataset folder; pass the folder .* --images DIR"),
        ({"root": "d", "csv_path": "nope.csv"}, r"nope.csv: CSV file not found; pass --csv FILE"),
        ({"root": "d", "images": "nope"}, r"nope: image folder not found; pass --images DIR"),
    ],
    ids=["csv-only", "images-only", "no-root", "root-is-csv", "bad-csv", "bad-images"],
)
def test_bad_paths(tmp_path, kwargs, expected):
    """Check that missing folders and files are errors naming the path and the option that fixes it."""
    _five(tmp_path / "d")
    kwargs = {k: tmp_path / v for k, v in kwargs.items()}
    with pytest.raises(DataError, match=expected):
        load_dataset(**kwargs)


def test_cli_dataset_arguments(tmp_path):
    """Check that the CLI's DATA, --csv and --images reach load_dataset, and --skip-missing too."""
    root = _five(tmp_path / "d")
    (root / "images" / "tt0000004.jpg").unlink()
    args = argparse.Namespace(data=str(root), csv=None, images=None, skip_missing=True)
    assert len(load_dataset_from_args(args).ids) == 4
    shutil.move(root / "train.csv", tmp_path / "labels.csv")
    args = argparse.Namespace(
        data=None, csv=str(tmp_path / "labels.csv"), images=str(root / "images"), skip_missing=False
    )
    with pytest.raises(DataError, match="1 of 5 labelled ids have no poster file"):
        load_dataset_from_args(args)


# --- undecodable posters -----------------------------------------------------------------------


def _break_posters(root: Path) -> None:
    """tt0000001 truncated, tt0000003 a text file, tt0000004 empty."""
    images = root / "images"
    data = (images / "tt0000001.jpg").read_bytes()
    (images / "tt0000001.jpg").write_bytes(data[: len(data) // 2])
    (images / "tt0000003.jpg").write_text("this is not a poster\n")
    (images / "tt0000004.jpg").write_bytes(b"")


def test_drop_images_raises_naming_the_first(tmp_path):
    """Check that undecodable posters found by a scan are an error naming the count, the first file and its reason."""
    root = _five(tmp_path / "d")
    _break_posters(root)
    dataset = load_dataset(root)
    bad = {r.id: r.error for r in scan_images(dataset.image_paths, progress=False) if r.error}
    assert sorted(bad) == ["tt0000001", "tt0000003", "tt0000004"]
    with pytest.raises(DataError) as info:
        drop_images(dataset, bad, skip=False)
    message = str(info.value)
    assert message.startswith(f"3 posters cannot be decoded, first {root / 'images' / 'tt0000001.jpg'} (")
    assert "truncated" in message and message.endswith("or pass --skip-missing to go on without them")
    assert len(dataset.ids) == 5


def test_drop_images_with_skip_leaves_them_out(tmp_path, caplog):
    """Check that skip=True removes undecodable posters from ids, records them as missing and warns."""
    root = _five(tmp_path / "d")
    _break_posters(root)
    write_poster(root / "images" / "tt9999999.jpg", seed=9)
    dataset = load_dataset(root)
    bad = {"tt0000003": "not an image file", "tt0000004": "empty file (0 bytes)", "tt9999999": "ignored"}
    with caplog.at_level(logging.WARNING):
        drop_images(dataset, bad, skip=True)
    assert dataset.ids == ["tt0000000", "tt0000001", "tt0000002"]
    assert dataset.missing_images == ["tt0000003", "tt0000004"]
    assert dataset.warnings == [
        f"2 posters cannot be decoded and are left out, first {root / 'images' / 'tt0000003.jpg'} (not an image file)"
    ]
    assert "cannot be decoded and are left out" in caplog.text
    assert "tt9999999" in dataset.unlabelled_images


def test_drop_images_ignores_posters_without_labels(tmp_path):
    """Check that an undecodable poster without a CSV row is no error: it is not used."""
    root = _five(tmp_path / "d")
    (root / "images" / "tt9999999.jpg").write_bytes(b"")
    dataset = load_dataset(root)
    drop_images(dataset, {"tt9999999": "empty file (0 bytes)"}, skip=False)
    assert len(dataset.ids) == 5 and dataset.warnings == []


# --- every message is one line -----------------------------------------------------------------


def _bad_datasets(tmp_path: Path) -> dict[str, Path]:
    """A dataset folder for each way of being unusable."""
    cases = {}
    for name, edit in {
        "bad-value": lambda r: _replace_line(r, 3, "tt0000001,\"['Drama']\",0,0,yes,0,0,0,0"),
        "conflict": lambda r: _replace_line(r, 3, _row("tt0000000", ["Drama"])),
        "no-id": lambda r: _replace_line(r, 1, HEADER.replace("Id", "Key")),
        "empty": lambda r: (r / "train.csv").write_bytes(b""),
        "binary": lambda r: (r / "train.csv").write_bytes(bytes(range(256))),
        "ragged": lambda r: (r / "train.csv").write_text('Id,Genre,Drama\n"a,b\nc,d,e,f\n'),
        "missing-image": lambda r: (r / "images" / "tt0000002.jpg").unlink(),
        "no-images-folder": lambda r: shutil.rmtree(r / "images"),
    }.items():
        root = _five(tmp_path / name)
        edit(root)
        cases[name] = root
    return cases


def test_every_error_is_one_line(tmp_path):
    """Check that every dataset error is a single line that names the file or folder at fault."""
    for name, root in _bad_datasets(tmp_path).items():
        with pytest.raises(DataError) as info:
            load_dataset(root)
        assert "\n" not in str(info.value), name
        assert str(root) in str(info.value), name
        assert isinstance(info.value, PosterGenreError) and isinstance(info.value, ValueError)


def _cli_with_dataset_command() -> str | None:
    """The first CLI command that takes a dataset, if every registered command module exists."""
    from postergenre.cli import COMMANDS

    if not COMMANDS or any(importlib.util.find_spec(f"postergenre.cli.{c}") is None for c in COMMANDS):
        return None
    return "analyze" if "analyze" in COMMANDS else None


@pytest.mark.parametrize(
    "case", ["bad-value", "conflict", "no-id", "empty", "binary", "ragged", "missing-image", "no-images-folder"]
)
def test_cli_bad_dataset_exits_2_with_one_line(tmp_path, capsys, case):
    """Check that through the CLI a bad dataset gives exit code 2 and one 'error:' line, without a traceback."""
    from postergenre.cli import main

    command = _cli_with_dataset_command()
    if command is None:
        pytest.skip("no CLI command that reads a dataset is registered yet")
    root = _bad_datasets(tmp_path)[case]
    code = main([command, str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(error_lines) == 1 and str(root) in error_lines[0]
    assert "Traceback" not in err


def test_cli_undecodable_poster_exits_2(tmp_path, capsys):
    """Check that through the CLI an undecodable labelled poster gives exit code 2 naming the file."""
    from postergenre.cli import main

    command = _cli_with_dataset_command()
    if command is None:
        pytest.skip("no CLI command that reads a dataset is registered yet")
    root = _five(tmp_path / "d")
    (root / "images" / "tt0000002.jpg").write_text("not a poster")
    code = main(["-q", command, str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: 1 posters cannot be decoded, first {root / 'images' / 'tt0000002.jpg'} (not an image file); "
        "replace or delete them, or pass --skip-missing to go on without them"
    ]
