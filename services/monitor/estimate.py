"""Label-free performance estimation (confidence-based, CBPE) from a version's calibration.

At training time the trainer fits two monotone maps on the version's held-out test split
(shared.contract.events.Calibration): top-class probability -> P(the prediction is right), and for
binary classifiers positive-class probability -> P(the row is positive). Where the relation of
scores to truth holds (covariate shift, not concept drift), a window's expected accuracy is the
mean of the first map over its rows, and its expected ROC-AUC is the area under the ROC curve in
which each row counts as positive with its calibrated probability (as NannyML's CBPE does).

Pure numpy: O(rows) for accuracy, one sort for ROC-AUC.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.contract.events import Calibration

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
METRICS = ("accuracy", "roc_auc")


def calibrated(knots: list[float], values: list[float], scores: FloatArray) -> FloatArray:
    """The map through its knots, clipped at both ends (as IsotonicRegression(out_of_bounds="clip"))."""
    found: FloatArray = np.interp(scores, np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64))
    return found


def expected_roc_auc(scores: FloatArray, positive: FloatArray) -> float | None:
    """ROC-AUC when each row is positive with probability `positive`, ranked by `scores`; rows with
    equal scores share one step of the curve (the trapezoid between them). None if the window has
    no expected positives or no expected negatives."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    true_pos = np.cumsum(p)
    false_pos = np.cumsum(1 - p)
    if true_pos[-1] <= 0 or false_pos[-1] <= 0:
        return None
    last_of_tie = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tpr = np.r_[0.0, true_pos[last_of_tie] / true_pos[-1]]
    fpr = np.r_[0.0, false_pos[last_of_tie] / false_pos[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def estimate(calibration: Calibration, confidence: FloatArray, score: FloatArray | None) -> dict[str, float]:
    """A window's estimated accuracy (and ROC-AUC for a binary classifier); empty without scores."""
    known = confidence[~np.isnan(confidence)]
    if known.size == 0:
        return {}
    found = {"accuracy": float(calibrated(calibration.confidence_knots, calibration.confidence_correct, known).mean())}
    if score is not None and calibration.positive_class is not None and calibration.score_knots:
        scores = score[~np.isnan(score)]
        if scores.size:
            positive = calibrated(calibration.score_knots, calibration.score_positive, scores)
            auc = expected_roc_auc(scores, positive)
            if auc is not None:
                found["roc_auc"] = auc
    return found


def realised_accuracy(labels: list[str], predictions: list[str]) -> float:
    """The share of right predictions (for recording next to an estimate)."""
    return float(np.mean([a == b for a, b in zip(labels, predictions, strict=True)])) if labels else float("nan")
