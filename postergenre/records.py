"""A small append-only store of JSON records keyed by a string, one folder per spec.

The folder is named after a digest of the spec (the settings and versions that produced the
records) and holds ``spec.json`` (for people, and a check on reopening) and ``records.jsonl``,
one ``{"key": ..., "value": ...}`` line per record. Appends are flushed as they are made, so an
interrupted run keeps every record it wrote; a half-written last line is ignored on reading.
Keys are content hashes, so a changed input simply gets a new line and the old one is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from postergenre.cache import locked

logger = logging.getLogger(__name__)

# Bump when the layout of the folder changes, so that old folders are not misread.
FORMAT_VERSION = 1

# records.jsonl path -> (file identity, bytes parsed, records): a store reopened in the same process
# (once per poster when a report explains a dozen) parses only what was appended since, not ~7k
# lines again.
_PARSED: dict[Path, tuple[tuple[int, int], int, dict[str, object]]] = {}


def spec_digest(spec: dict) -> str:
    """A short, stable digest of a JSON-able spec."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class RecordStore:
    """The records of one spec under ``root``; ``get`` reads, ``append`` writes through to disk."""

    def __init__(self, root: Path, spec: dict):
        self.spec = dict(spec, store_format=FORMAT_VERSION)
        self.folder = Path(root) / spec_digest(self.spec)
        self.path = self.folder / "records.jsonl"
        self._records: dict[str, object] = {}
        self._open()

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_path = self.folder / "spec.json"
        if not spec_path.exists():
            spec_path.write_text(json.dumps(self.spec, indent=2, sort_keys=True) + "\n")
        if self.path.exists():
            self._end_partial_line()
            self._records = self._read_records()

    def _read_records(self) -> dict[str, object]:
        """Every record, parsing only the bytes appended since this process last read the file."""
        with open(self.path, "rb") as handle:
            status = os.fstat(handle.fileno())
            identity = (status.st_dev, status.st_ino)
            seen, offset, records = _PARSED.get(self.path, (identity, 0, {}))
            if seen != identity or status.st_size < offset:  # another file now (deleted, replaced)
                offset, records = 0, {}
            handle.seek(offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being appended is read next time
        records = {**records, **dict(self._parse(complete))}
        _PARSED[self.path] = (identity, offset + len(complete), records)
        return dict(records)

    def _parse(self, data: bytes) -> Iterator[tuple[str, object]]:
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                record = json.loads(line)
                yield record["key"], record["value"]
            except (json.JSONDecodeError, KeyError, TypeError):
                # An interrupted append leaves a partial line; its poster is recomputed.
                logger.debug("%s: unreadable record skipped (line %d of the part read)", self.path, number)

    def _end_partial_line(self) -> None:
        """Close a half-written last line, so that the next append starts on a line of its own."""
        with locked(self.folder / ".lock"), open(self.path, "rb+") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str, default=None):
        return self._records.get(key, default)

    def append(self, items: Iterable[tuple[str, object]]) -> None:
        """Store ``(key, value)`` pairs, flushed and synced before returning."""
        lines = []
        for key, value in items:
            self._records[key] = value
            lines.append(json.dumps({"key": key, "value": value}, separators=(",", ":")) + "\n")
        if not lines:
            return
        with locked(self.folder / ".lock"), open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
