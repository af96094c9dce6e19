"""Where postergenre keeps what it can recompute: OCR results, text embeddings, features."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "POSTERGENRE_CACHE_DIR"


def cache_root() -> Path:
    """``$POSTERGENRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/postergenre``, else ``~/.cache/postergenre``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "postergenre"


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
