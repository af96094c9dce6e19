"""Seeing inside the models: class activation maps, filters, feature maps and activation maximisation.

Everything here works on PyTorch modules, whatever weights they hold (bundled ImageNet ones,
a fine-tuned backbone, a custom CNN trained from scratch):

- :mod:`~postergenre.explain.classifier`: :class:`GenreClassifier`, a backbone and a head with
  their genres, thresholds and preprocessing; built from parts or loaded from a run folder.
- :mod:`~postergenre.explain.gradcam`: Grad-CAM heatmaps at the poster's own size.
- :mod:`~postergenre.explain.filters`: layer names, first-layer filters and feature maps.
- :mod:`~postergenre.explain.activation_max`: inputs synthesised to excite a channel or a genre.
- :mod:`~postergenre.explain.render`: drawing heatmaps, grids and captions (PIL only, no matplotlib).
- :mod:`~postergenre.explain.report`: the report section of confident right and wrong answers.
- :mod:`~postergenre.explain.choices`: turning the user's names (run, backbone, genre, layer) into
  objects, with errors that list the valid choices.

Submodules import torch; this package file imports nothing heavy.
"""
