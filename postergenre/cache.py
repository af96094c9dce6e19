"""Where postergenre keeps what it can recompute: OCR results, text embeddings, features."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "POSTERGENRE_CACHE_DIR"


def cache_root() -> Path:
    """``$POSTERGENRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/postergenre``, else ``~/.cache/postergenre``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "postergenre"
