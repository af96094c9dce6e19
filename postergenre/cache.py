"""Where postergenre keeps what it can recompute: OCR results, text embeddings, features."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "POSTERGENRE_CACHE_DIR"

# (path, device, inode, size, mtime) -> sha256: features and OCR both key their caches by a
# poster's content, and a train hashed every poster twice over (and once more to evaluate).
_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()


def cache_root() -> Path:
    """``$POSTERGENRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/postergenre``, else ``~/.cache/postergenre``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "postergenre"


def content_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes, remembered for the process while the file stays as it was
    (same inode, size and modification time). Raises OSError when it cannot be read."""
    path = Path(path)
    status = path.stat()
    key = (str(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is None:
        known = hashlib.sha256(path.read_bytes()).hexdigest()
        with _DIGESTS_LOCK:
            _DIGESTS[key] = known
    return known


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
