"""Features on disk: one folder per extraction spec, rows looked up by the poster's content hash.

A spec (backbone, weights, preprocessing, flip) gets a folder named after a digest of it, holding

- ``spec.json``: the spec itself, for people and for a sanity check on reopening;
- ``features.f32``: an append-only float32 matrix (float16 where the spec says ``"dtype": "float16"``, as
  the activation maps that fine-tuning caches do), ``num_features`` wide, read through a memory map;
- ``index.tsv``: one ``<sha256 of the file's bytes>\\t<row>`` line per stored row.

Rows are keyed by content, not by id or path: a renamed poster is still cached, two identical
posters share a row, and a changed file gets a new row. Appends write and sync the rows first and
their index lines after, so an interrupted run leaves at worst rows that no index line names (they
are overwritten by the next append) and loses nothing it had already indexed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from postergenre.cache import cache_root, locked

logger = logging.getLogger(__name__)

# Bump when the layout or the meaning of stored rows changes, so old folders are not reused.
FORMAT_VERSION = 1
DTYPE = np.float32


def cache_dir() -> Path:
    """postergenre's cache folder (see :func:`postergenre.cache.cache_root`)."""
    return cache_root()


def spec_digest(spec: dict) -> str:
    """A short, stable digest of a JSON-able spec."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cut_torn_line(index) -> None:
    """Drop a last line that an interrupted append left without its newline, and stand at the end."""
    size = index.seek(0, os.SEEK_END)
    if size == 0:
        return
    index.seek(max(0, size - 4096))
    tail = index.read()
    if not tail.endswith(b"\n"):
        index.truncate(size - len(tail) + tail.rfind(b"\n") + 1)
    index.seek(0, os.SEEK_END)


class FeatureStore:
    """The stored features of one spec; ``rows`` maps content hashes to row numbers."""

    def __init__(self, root: Path, spec: dict):
        self.spec = dict(spec, format=FORMAT_VERSION)
        self.num_features = int(spec["num_features"])
        # Specs without a dtype are float32 (and keep their folder digests).
        self.dtype = np.dtype(spec.get("dtype", DTYPE))
        self.folder = Path(root) / f"{spec['backbone']}-{spec_digest(self.spec)}"
        self.data_path = self.folder / "features.f32"
        self.index_path = self.folder / "index.tsv"
        self._open_folder()
        self.rows = self._read_index()

    def _open_folder(self) -> None:
        spec_path = self.folder / "spec.json"
        self.folder.mkdir(parents=True, exist_ok=True)
        if not spec_path.exists():
            _write_atomically(spec_path, json.dumps(self.spec, indent=2, sort_keys=True) + "\n")
        elif json.loads(spec_path.read_text()) != json.loads(json.dumps(self.spec)):
            raise ValueError(
                f"{spec_path}: holds another spec than its folder name says; delete {self.folder} to rebuild it"
            )
        self.data_path.touch(exist_ok=True)
        self.index_path.touch(exist_ok=True)

    def _read_index(self) -> dict[str, int]:
        """Index lines whose rows are fully on disk; a torn last line (no newline) is ignored."""
        n_stored = self.data_path.stat().st_size // (self.num_features * self.dtype.itemsize)
        rows = {}
        text = self.index_path.read_text()
        self._index_size = len(text.encode())
        for line in text.splitlines(keepends=True):
            digest, _, row = line.rstrip("\n").partition("\t")
            if line.endswith("\n") and row.isdigit() and int(row) < n_stored:
                rows[digest] = int(row)
        return rows

    def missing(self, digests) -> list[str]:
        """The digests, without repeats, that have no stored row, in first-seen order."""
        return [d for d in dict.fromkeys(digests) if d not in self.rows]

    def append(self, digests: list[str], values: np.ndarray) -> None:
        """Store one row per digest; digests already stored (by another process, say) are skipped."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape != (len(digests), self.num_features):
            raise ValueError(f"expected features of shape ({len(digests)}, {self.num_features}), got {values.shape}")
        with locked(self.folder / ".lock"):
            if self.index_path.stat().st_size != self._index_size:  # another process appended, or a torn line
                self.rows = self._read_index()
            seen = set(self.rows)
            keep = [i for i, d in enumerate(digests) if not (d in seen or seen.add(d))]
            if not keep:
                return
            first = max(self.rows.values(), default=-1) + 1
            with open(self.data_path, "r+b") as data:
                data.seek(first * self.num_features * self.dtype.itemsize)
                data.write(values[keep].tobytes())
                data.flush()
                os.fsync(data.fileno())
            lines = "".join(f"{digests[i]}\t{first + k}\n" for k, i in enumerate(keep))
            with open(self.index_path, "r+b") as index:
                _cut_torn_line(index)
                index.write(lines.encode())
                index.flush()
                os.fsync(index.fileno())
                self._index_size = index.tell()
            self.rows.update({digests[i]: first + k for k, i in enumerate(keep)})

    def read(self, digests: list[str]) -> np.ndarray:
        """The rows for these digests, in order: a read-only memory map where they are stored
        contiguously and in order (a first extraction), else a copy."""
        if not digests:
            return np.zeros((0, self.num_features), self.dtype)
        rows = np.fromiter((self.rows[d] for d in digests), dtype=np.int64, count=len(digests))
        n_rows = int(rows.max()) + 1
        matrix = np.memmap(self.data_path, dtype=self.dtype, mode="r", shape=(n_rows, self.num_features))
        if np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            return matrix[rows[0] : rows[0] + len(rows)]
        return np.asarray(matrix[rows])
