"""Reading and validating a poster dataset.

A dataset is a CSV with an ``Id`` column, an optional ``Genre`` column (a Python-list string such
as ``"['Comedy', 'Drama']"``) and one 0/1 column per genre, plus a folder of posters named
``<Id>.jpg``. The genre columns are whatever the CSV has after ``Id`` and ``Genre``.

Every problem is reported with the file, the row (as the line number in the CSV, counting the
header as line 1), the id and the column, and what to do about it. Problems that leave the data
usable become warnings in :attr:`PosterDataset.warnings`; the rest raise :class:`DataError`.
"""

from __future__ import annotations

import ast
import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from postergenre.errors import DataError

logger = logging.getLogger(__name__)

ID_COLUMN = "Id"
GENRE_LIST_COLUMN = "Genre"
IMAGE_FOLDERS = ("images", "Images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# How many ids an error message lists before it says "and N more".
_SHOW_IDS = 5


@dataclass
class PosterDataset:
    """A validated poster dataset.

    ``labels`` has one row per unique id (index ``Id``) and one 0/1 column per genre, in the
    CSV's order; ``row_labels`` is the same before duplicate rows were merged, one row per CSV
    row. ``image_paths`` maps each labelled id that has a poster to its file.
    """

    csv_path: Path
    images_dir: Path
    labels: pd.DataFrame
    row_labels: pd.DataFrame
    image_paths: dict[str, Path]
    n_rows: int
    duplicate_rows: int
    duplicate_ids: list[str]
    missing_images: list[str]
    unlabelled_images: dict[str, Path]
    warnings: list[str] = field(default_factory=list)

    @property
    def genres(self) -> list[str]:
        return list(self.labels.columns)

    @property
    def ids(self) -> list[str]:
        """Labelled ids that have a poster, in CSV order."""
        return [i for i in self.labels.index if i in self.image_paths]

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)


def find_images_dir(root: Path) -> Path:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DataError(
        f"{root}: no poster folder found; expected {' or '.join(IMAGE_FOLDERS)}/ holding <Id>.jpg "
        "files, or pass --images DIR"
    )


def resolve_paths(
    root: str | Path | None, csv_path: str | Path | None = None, images: str | Path | None = None
) -> tuple[Path, Path]:
    """The CSV and the image folder for a dataset folder and optional overrides."""
    if root is None and (csv_path is None or images is None):
        raise DataError("give a dataset folder, or both --csv and --images")
    root = Path(root) if root is not None else None
    if root is not None and root.is_file():
        raise DataError(
            f"{root}: this is a file, not a dataset folder; pass the folder that holds train.csv and images/, "
            "or --csv FILE and --images DIR"
        )
    if root is not None and not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; expected a folder with train.csv and images/")
    csv_path = Path(csv_path) if csv_path is not None else root / "train.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found; pass --csv FILE to point at the labels")
    images_dir = Path(images) if images is not None else find_images_dir(root)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: image folder not found; pass --images DIR")
    return csv_path, images_dir


def read_label_table(csv_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The CSV as strings, indexed by line number, with its genre columns.

    Raises DataError for a file that is no CSV, a bad header, or a row with the wrong number of fields.
    """
    text = _read_text(csv_path)
    header, records, lines = _read_records(text, csv_path)
    columns = [c.strip() for c in header]
    _check_header(columns, csv_path)
    if not records:
        raise DataError(f"{csv_path}: the CSV has a header but no data rows")
    # The index is each row's line in the file, so that every message can point at it even
    # after blank lines (which are skipped).
    table = pd.DataFrame(records, columns=columns, index=pd.Index(lines, name="line"), dtype=str)
    genres = [c for c in table.columns if c not in (ID_COLUMN, GENRE_LIST_COLUMN)]
    if not genres:
        raise DataError(f"{csv_path}: no genre columns; expected one 0/1 column per genre after Id")
    table[ID_COLUMN] = table[ID_COLUMN].str.strip()
    return table, genres


def _read_text(csv_path: Path) -> str:
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read the file ({exc.strerror})") from exc
    if not raw.strip():
        raise DataError(f"{csv_path}: the CSV is empty; expected a header line starting with Id")
    if b"\x00" in raw[:4096]:
        raise DataError(f"{csv_path}: this is not a CSV file (it holds binary data); pass the labels CSV")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{csv_path}: this is not a UTF-8 CSV file ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc


def _read_records(text: str, csv_path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the data rows and the line of each row; blank rows are skipped."""
    # NOTE: the csv module rather than pandas, which skips blank lines without a trace (so line
    # numbers drift), renames repeated columns to "Action.1" and pads short rows silently.
    header, header_line, records, lines = None, 0, [], []
    for row, line in _rows_with_lines(text, csv_path):
        if header is None:
            header, header_line = row, line
        elif len(row) != len(header):
            raise DataError(
                f"{csv_path}: line {line} has {len(row)} fields but the header (line {header_line}) has "
                f"{len(header)}; every row needs one value per column (look for a stray comma or an unclosed quote)"
            )
        else:
            records.append(row)
            lines.append(line)
    return header or [], records, lines


def _rows_with_lines(text: str, csv_path: Path):
    """Each non-blank CSV record with the line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    start = 1
    try:
        for row in reader:
            # No value of this format spans lines: a record that does has an unclosed quote, which
            # would otherwise swallow the next rows without a word.
            if reader.line_num > start:
                raise DataError(
                    f"{csv_path}: line {start}: a quoted value runs on to line {reader.line_num}; close the quote"
                )
            if any(field.strip() for field in row):
                yield row, start
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{csv_path}: line {reader.line_num}: this is not a valid CSV file ({exc})") from exc


def _check_header(columns: list[str], csv_path: Path) -> None:
    if ID_COLUMN not in columns:
        found = ", ".join(columns[:8]) or "none"
        raise DataError(
            f"{csv_path}: no '{ID_COLUMN}' column (columns found: {found}); the first line must be a "
            f"header such as Id,Genre,Action,Comedy,..."
        )
    for k, name in enumerate(columns):
        if not name:
            raise DataError(f"{csv_path}: column {k + 1} of the header has no name; name it or remove it")
        if name in columns[:k]:
            raise DataError(
                f"{csv_path}: column '{name}' appears twice in the header (columns {columns.index(name) + 1} "
                f"and {k + 1}); keep one"
            )


def _line(table: pd.DataFrame, row: int) -> int:
    return int(table.index[row])


def _listing(ids: list[str]) -> str:
    shown = ", ".join(ids[:_SHOW_IDS])
    return shown + (f" and {len(ids) - _SHOW_IDS} more" if len(ids) > _SHOW_IDS else "")


def parse_genre_columns(table: pd.DataFrame, genres: list[str], csv_path: Path) -> pd.DataFrame:
    """The 0/1 genre columns as small integers; raises DataError naming the first bad cell."""
    values = table[genres].apply(lambda col: col.str.strip())
    bad = ~values.isin(["0", "1"])
    if bad.to_numpy().any():
        rows, cols = bad.to_numpy().nonzero()
        r, c = rows[0], cols[0]
        value = values.iat[r, c]
        more = f" ({len(rows) - 1} more bad cells)" if len(rows) > 1 else ""
        raise DataError(
            f"{csv_path}: line {_line(table, r)}, id {table[ID_COLUMN].iat[r]}, column {genres[c]}: "
            f"value {value!r} is not 0 or 1{more}; genre columns must hold 0 or 1"
        )
    return (values == "1").astype("int8")


def check_genre_lists(table: pd.DataFrame, labels: pd.DataFrame, csv_path: Path) -> list[str]:
    """Warnings for rows whose Genre list disagrees with their 0/1 columns."""
    if GENRE_LIST_COLUMN not in table.columns:
        return []
    genres = list(labels.columns)
    # A NumPy array, not labels.iloc[r]: a pandas row lookup per CSV row took over a second on 7,000 rows.
    rows = labels.to_numpy()
    disagreeing = []
    for r, text in enumerate(table[GENRE_LIST_COLUMN]):
        listed = _parse_genre_list(text)
        marked = {g for g, v in zip(genres, rows[r], strict=True) if v}
        if listed is None or listed != marked:
            disagreeing.append((r, listed, marked))
    if not disagreeing:
        return []
    r, listed, marked = disagreeing[0]
    more = f" ({len(disagreeing) - 1} more rows disagree)" if len(disagreeing) > 1 else ""
    listed_text = "unreadable" if listed is None else sorted(listed)
    return [
        f"{csv_path}: line {_line(table, r)}, id {table[ID_COLUMN].iat[r]}, column {GENRE_LIST_COLUMN}: "
        f"lists {listed_text} but the 0/1 columns mark {sorted(marked)}{more}; "
        "the 0/1 columns are used, fix the CSV if they are wrong"
    ]


def _parse_genre_list(text: str) -> set[str] | None:
    text = text.strip()
    if not text:
        return set()
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(parsed, list | tuple):
        return None
    return {str(g).strip() for g in parsed}


def merge_duplicate_ids(
    table: pd.DataFrame, labels: pd.DataFrame, csv_path: Path
) -> tuple[pd.DataFrame, list[str], int]:
    """One row per id: identical repeats merged, conflicting repeats an error."""
    ids = table[ID_COLUMN]
    empty = ids == ""
    if empty.any():
        r = int(empty.to_numpy().nonzero()[0][0])
        raise DataError(f"{csv_path}: line {_line(table, r)}: empty {ID_COLUMN}; every row needs an id")
    labels = labels.set_axis(ids.to_numpy(), axis=0)
    labels.index.name = ID_COLUMN
    repeated = ids.duplicated(keep=False)
    if not repeated.any():
        return labels, [], 0
    duplicate_ids = list(dict.fromkeys(ids[repeated]))
    for id_ in duplicate_ids:
        rows = labels.loc[[id_]]
        if (rows != rows.iloc[0]).to_numpy().any():
            lines = [_line(table, r) for r in (ids == id_).to_numpy().nonzero()[0]]
            raise DataError(
                f"{csv_path}: id {id_} appears on lines {', '.join(map(str, lines))} with different "
                "genres; keep one row per id"
            )
    n_duplicate_rows = int(ids.duplicated().sum())
    return labels[~labels.index.duplicated()], duplicate_ids, n_duplicate_rows


def index_images(images_dir: Path) -> dict[str, Path]:
    """Poster files in a folder, by id (the file name without its suffix)."""
    paths = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            paths.setdefault(path.stem, path)
    return paths


def load_dataset(
    root: str | Path | None = None,
    *,
    csv_path: str | Path | None = None,
    images: str | Path | None = None,
    skip_missing: bool = False,
) -> PosterDataset:
    """Read and validate a poster dataset.

    Args:
        root: the dataset folder, holding ``train.csv`` and ``images/`` (or ``Images/``).
        csv_path: the labels CSV, if not ``root/train.csv``.
        images: the poster folder, if not under ``root``.
        skip_missing: go on without the labelled ids that have no poster, with a warning,
            instead of raising :class:`DataError`.
    """
    csv_path, images_dir = resolve_paths(root, csv_path, images)
    table, genres = read_label_table(csv_path)
    labels = parse_genre_columns(table, genres, csv_path)
    warnings = check_genre_lists(table, labels, csv_path)
    row_labels = labels.reset_index(drop=True)
    labels, duplicate_ids, n_duplicate_rows = merge_duplicate_ids(table, labels, csv_path)
    if duplicate_ids:
        warnings.append(
            f"{csv_path}: {n_duplicate_rows} duplicate rows for {len(duplicate_ids)} ids "
            f"({_listing(duplicate_ids)}) are identical and were merged"
        )

    found = index_images(images_dir)
    image_paths = {i: found[i] for i in labels.index if i in found}
    missing = [i for i in labels.index if i not in found]
    if missing and not skip_missing:
        raise DataError(
            f"{images_dir}: {len(missing)} of {len(labels)} labelled ids have no poster file "
            f"({_listing(missing)}); add the files as <Id>.jpg or pass --skip-missing to go on without them"
        )
    if missing:
        warnings.append(
            f"{images_dir}: {len(missing)} labelled ids have no poster file ({_listing(missing)}); "
            "they are left out (--skip-missing)"
        )
    unlabelled = {i: p for i, p in found.items() if i not in labels.index}

    dataset = PosterDataset(
        csv_path=csv_path,
        images_dir=images_dir,
        labels=labels,
        row_labels=row_labels,
        image_paths=image_paths,
        n_rows=len(table),
        duplicate_rows=n_duplicate_rows,
        duplicate_ids=duplicate_ids,
        missing_images=missing,
        unlabelled_images=unlabelled,
    )
    for message in warnings:
        dataset.warn(message)
    if unlabelled:
        logger.info("%s: %d posters have no row in %s; they are ignored", images_dir, len(unlabelled), csv_path.name)
    return dataset


def drop_images(dataset: PosterDataset, bad: dict[str, str], *, skip: bool) -> None:
    """Leave out labelled posters that cannot be decoded, or raise if ``skip`` is off.

    ``bad`` maps ids to the reason their image failed to decode.
    """
    bad = {i: reason for i, reason in bad.items() if i in dataset.image_paths}
    if not bad:
        return
    first = next(iter(bad))
    detail = f"{dataset.image_paths[first]} ({bad[first]})"
    if not skip:
        raise DataError(
            f"{len(bad)} posters cannot be decoded, first {detail}; replace or delete them, "
            "or pass --skip-missing to go on without them"
        )
    for i in bad:
        del dataset.image_paths[i]
        dataset.missing_images.append(i)
    dataset.warn(f"{len(bad)} posters cannot be decoded and are left out, first {detail}")
