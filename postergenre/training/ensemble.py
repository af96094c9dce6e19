"""Ensembles of backbones: one head per backbone on its own cached features, logits averaged.

``--backbone efficientnet_lite0+mobilenet_v2+efficientnet_lite2`` extracts each backbone's pooled
features at its own measured input (each cached as if it ran alone), lays them side by side, trains
one head per backbone on its columns (side by side, one core each) and saves an
:class:`~postergenre.training.heads.EnsembleHead`. Everything after training (thresholds, text
fusion, evaluation, prediction) sees one head over the joined features.

Measured on the shared dataset (standard split; 256-wide MLP heads; lite2 at 320x192, the others at
256x160 unless named; late fusion with the MiniLM text head), validation / test macro AUC and test AP:

    backbones                                  image                   image + text (late)
    efficientnet_lite0                         0.782 / 0.748 / 0.281   0.807 / 0.788 / 0.322
    efficientnet_lite0@320x224                 0.790 / 0.760 / 0.305   0.816 / 0.796 / 0.345
    lite0 + mobilenet_v2                       0.789 / 0.762 / 0.297   0.813 / 0.796 / 0.338
    lite0 + lite2                              0.793 / 0.762 / 0.307   0.815 / 0.797 / 0.341
    lite0 + mobilenet_v2 + lite2               0.795 / 0.767 / 0.311   0.817 / 0.800 / 0.348
    lite0@320x224 + mobilenet_v2 + lite2       0.802 / 0.773 / 0.321   0.822 / 0.804 / 0.356
    one head over lite0 + mobilenet_v2 + lite2 0.785 / 0.760 / 0.313   0.813 / 0.794 / 0.353
    lite0@320x224 + mobilenet_v2 + lite1 + lite2                       0.822 / 0.803 / 0.352

With the stages before the last pooled too (postergenre.models.backbones.POOLED_STAGES),
lite0@320x224 + mobilenet_v2 + lite2 with text measured 0.811 / 0.363 on test, whether mobilenet_v2
pooled its stages or not; with the poster text's glued words split and every head refit on train +
validation (postergenre.training.refit), 0.821 / 0.382 (validation: image 0.808, late fusion 0.831);
with lite0 at 320x224 in the default heads (dropout 0.7, lr 6e-4, bfloat16; see
:mod:`postergenre.training.config`), 0.824 / 0.380 in a warm run of 19.3 s (25-28 s before).

Each backbone costs its own extraction (cold, on 7.2k posters and 2 cores: about 90 s for lite0 or
mobilenet_v2 at 256x160, 150 s for lite0 at 320x224, 160 s for lite2) and its own head in every warm
run, which is why a single backbone stays the default (lite0 at 320x224 with text: 0.818 / 0.373;
see :mod:`postergenre.training.config`).
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from postergenre.training.loop import TrainResult, train_concurrently

logger = logging.getLogger(__name__)


def column_spans(widths: list[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each member's features in the joined matrix, in member order."""
    stops = np.cumsum(widths).tolist()
    return [(stop - width, stop) for width, stop in zip(widths, stops, strict=True)]


def join_features(members: dict[str, object]) -> tuple[list[str], np.ndarray, dict[str, str], dict]:
    """Member feature sets (``{member: FeatureSet}``, a member being ``NAME`` or ``NAME@HxW``) side
    by side over the posters they all have.

    Returns ``(ids, values, failed, spec)``: ``failed`` merges the members' unreadable posters, and
    ``spec`` lists each member's spec with its column span, so that a saved model knows which
    columns came from which backbone.
    """
    sets = list(members.values())
    failed = {id_: reason for feature_set in sets for id_, reason in dict(feature_set.failed).items()}
    common = set.intersection(*(set(feature_set.ids) for feature_set in sets))
    ids = [id_ for id_ in sets[0].ids if id_ in common]
    values = np.hstack([_rows(feature_set, ids) for feature_set in sets])
    spans = column_spans([int(feature_set.values.shape[1]) for feature_set in sets])
    spec = {
        "backbone": "+".join(members),
        "weights": "+".join(str(feature_set.spec.get("weights")) for feature_set in sets),
        "members": [
            {**dict(feature_set.spec), "member": name, "columns": list(span)}
            for (name, feature_set), span in zip(members.items(), spans, strict=True)
        ],
    }
    return ids, values, failed, spec


def _rows(feature_set, ids: list[str]) -> np.ndarray:
    """The feature set's rows for ``ids``, in that order, as float32."""
    position = {id_: row for row, id_ in enumerate(feature_set.ids)}
    return np.asarray(feature_set.values, dtype=np.float32)[[position[id_] for id_ in ids]]


def train_ensemble(trainer, config, sides: dict, spans: list[tuple[int, int]]) -> TrainResult:
    """One head per member, each trained by ``trainer(train, validation, config)`` on its own columns
    of ``sides`` (side by side, one core each), returned as one TrainResult with an EnsembleHead."""
    from postergenre.training.heads import EnsembleHead

    def columns(side: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        _, x, y = sides[side]
        return x[:, start:stop], y

    jobs = {
        name: partial(trainer, columns("train", *span), columns("validation", *span), config)
        for name, span in zip(config.members, spans, strict=True)
    }
    results = train_concurrently(jobs)
    head = EnsembleHead([results[name].head for name in config.members], spans)
    warnings = [f"{name}: {warning}" for name, result in results.items() for warning in result.warnings]
    return TrainResult(
        head,
        ensemble_history(results),
        best_epoch=max(result.best_epoch for result in results.values()),
        stopped_early=all(result.stopped_early for result in results.values()),
        warnings=warnings,
        members=results,
    )


def ensemble_history(results: dict[str, TrainResult]) -> list[dict]:
    """One row per epoch with each member's figures as ``<figure> <backbone>`` columns (blank after a
    member stopped), which the history plot draws as one line per member."""
    n_epochs = max(len(result.history) for result in results.values())
    rows = [{"epoch": epoch} for epoch in range(1, n_epochs + 1)]
    for name, result in results.items():
        for row, member_row in zip(rows, result.history, strict=False):
            row.update({f"{key} {name}": value for key, value in member_row.items() if key != "epoch"})
    return rows
