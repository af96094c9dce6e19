"""Where postergenre keeps what it can recompute: OCR results, text embeddings, features."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "POSTERGENRE_CACHE_DIR"

# (device, inode, size, mtime) -> sha256: features and OCR both key their caches by a poster's
# content, and a train hashed every poster twice over (and once more to evaluate). Kept on disk
# too (DIGESTS_FILE), since hashing 7k posters took about a second of every warm train.
_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()
_NEW_DIGESTS: list[tuple[tuple, str]] = []
_READ_FROM: set[Path] = set()  # the cache folders whose digest file is read
DIGESTS_FILE = "digests.tsv"
# A file changed twice within one tick of its file system's clock keeps its size and time, so a
# digest is written down only for files untouched for this long when hashed (git's "racy" files).
SETTLED_SECONDS = 2.0


def cache_root() -> Path:
    """``$POSTERGENRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/postergenre``, else ``~/.cache/postergenre``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "postergenre"


def known_digest(path: str | Path) -> str | None:
    """The file's digest if it was hashed before as it is now (see :func:`content_digest`), else None,
    without reading the file. Raises OSError when it cannot be stat'ed."""
    status = Path(path).stat()
    _read_digests(cache_root())
    with _DIGESTS_LOCK:
        return _DIGESTS.get((status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns))


def content_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes, remembered while the file stays as it was (same device, inode,
    size and modification time): for the process, and in the cache folder once :func:`save_digests`
    writes it down. Raises OSError when it cannot be read."""
    path = Path(path)
    status = path.stat()
    key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    _read_digests(cache_root())
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is None:
        known = hashlib.sha256(path.read_bytes()).hexdigest()
        settled = time.time() - status.st_mtime > SETTLED_SECONDS
        with _DIGESTS_LOCK:
            _DIGESTS[key] = known
            if settled:
                _NEW_DIGESTS.append((key, known))
    return known


def save_digests() -> None:
    """Append the digests computed since the last call to the cache folder's digest file."""
    with _DIGESTS_LOCK:
        new, _NEW_DIGESTS[:] = list(_NEW_DIGESTS), []
    if not new:
        return
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lines = "".join("\t".join(map(str, key)) + f"\t{digest}\n" for key, digest in new)
        with locked(root / f".{DIGESTS_FILE}.lock"), open(root / DIGESTS_FILE, "a") as handle:
            handle.write(lines)
    except OSError as exc:  # only a speed-up is lost
        logger.warning("could not remember file digests in %s (%s); they are recomputed next time", root, exc)


def _read_digests(root: Path) -> None:
    """Take in the digests written down in ``root`` (once per folder and process)."""
    with _DIGESTS_LOCK:
        if root in _READ_FROM:
            return
        _READ_FROM.add(root)
        try:
            text = (root / DIGESTS_FILE).read_text()
        except OSError:
            return
        for line in text.splitlines():
            fields = line.split("\t")
            # A torn last line (an interrupted write) or a foreign one is skipped.
            if len(fields) == 5 and len(fields[4]) == 64 and all(f.isdigit() for f in fields[:4]):
                _DIGESTS.setdefault(tuple(int(f) for f in fields[:4]), fields[4])


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` where the platform has ``fcntl``, so that two processes
    appending to one cache store at once take turns."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent runs on one store are not supported there.
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
