"""postergenre: predict a movie's genres from its poster by transfer learning.

The package is laid out by role:

- ``postergenre.data``: reading and validating a poster dataset, duplicates, genre selection, splits.
- ``postergenre.analysis``: the data analysis report.
- ``postergenre.models``: backbones (pretrained and from scratch) and heads.
- ``postergenre.features``: pooled features, extracted once and cached on disk.
- ``postergenre.training``: multi-label and per-genre training.
- ``postergenre.evaluation``: metrics beside trivial baselines, curves and reports.
- ``postergenre.inference``: predicting for posters with a saved run.
- ``postergenre.cli``: the ``postergenre`` command.

Heavy libraries (torch, ONNX Runtime, matplotlib) are imported where they are used, so that
``import postergenre`` and ``postergenre --help`` stay fast.
"""

from postergenre.errors import DataError, PosterGenreError

__version__ = "0.1.0"

__all__ = ["DataError", "PosterGenreError", "__version__"]
