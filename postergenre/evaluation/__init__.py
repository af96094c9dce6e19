"""Evaluation that does not flatter: test figures beside trivial baselines, curves, reports, comparisons.

- ``metrics``: ``evaluate_scores`` (pure functions on ``y_true``/``y_score`` arrays; AUC and AP from scikit-learn)
- ``baselines``: the trivial predictors every figure is shown beside
- ``thresholds``: per-genre decision thresholds tuned for F1 on validation
- ``plots``: ROC, precision-recall, history and per-genre plots (matplotlib, imported lazily)
- ``report``: the offline run report; ``compare``: several runs side by side
"""
