"""The built-in demo dataset: a few hundred poster thumbnails that ship with the package."""

from pathlib import Path

DEMO_ROOT = Path(__file__).parent


def demo_dataset_root() -> Path:
    """The folder of the built-in demo dataset (``train.csv``, ``images/``, ``SOURCE.md``)."""
    return DEMO_ROOT
