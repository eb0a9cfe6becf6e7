"""Predictions and scores: probability arithmetic and blends (ensemble.py), a finished run's metrics
(score.py), the submission's probabilities and TTA (predict.py), the expected submission accuracy
(expected.py), per-digit evaluation (evaluate.py), the report's pictures (report.py), and your own
digit pictures (images.py).

May import the shared modules, training/ (settings; the models, only where a module runs them) and
runs/. ensemble.py and score.py's `run_metrics` are pure functions over arrays.
"""
