"""Pooled backbone features of posters, extracted once and cached on disk.

``extract_features(image_paths, backbone)`` returns a :class:`FeatureSet`; a second call with the
same posters, backbone, weights, preprocessing and flip reads everything from the cache.
"""

from postergenre.features.cache import cache_dir
from postergenre.features.extract import (
    DEFAULT_FLIP,
    FeatureSet,
    default_preprocessing,
    extract_features,
    load_input,
)

__all__ = ["DEFAULT_FLIP", "FeatureSet", "cache_dir", "default_preprocessing", "extract_features", "load_input"]
