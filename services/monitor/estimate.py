"""Label-free performance estimation (confidence-based, CBPE) from a version's calibration.

At training time the trainer fits two monotone maps on the version's held-out test split
(shared.contract.events.Calibration): top-class probability -> P(the prediction is right), and for
binary classifiers positive-class probability -> P(the row is positive). Where the relation of
scores to truth holds (covariate shift, not concept drift), a window's expected accuracy is the
mean of the first map over its rows, and its expected ROC-AUC is the area under the ROC curve in
which each row counts as positive with its calibrated probability (as NannyML's CBPE does).

Pure numpy and O(rows): scores (probabilities, in [0, 1]) are counted into BUCKETS equal buckets,
each map is evaluated once at the buckets' centres, and a window's estimate is a weighted sum over
the buckets; rows of one bucket are tied in the ROC curve (they are at most 1/BUCKETS apart). No
sort: the time grows with the rows only through one pass that counts them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.contract.events import Calibration

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
METRICS = ("accuracy", "roc_auc")
BUCKETS = 8192
CENTRES: FloatArray = (np.arange(BUCKETS, dtype=np.float64) + 0.5) / BUCKETS


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


def counts(values: FloatArray) -> tuple[np.ndarray[Any, np.dtype[np.intp]], int]:
    """How many of the known (not NaN) values fall in each bucket of [0, 1], and how many are known."""
    known = values[~np.isnan(values)]
    index = (known * BUCKETS).astype(np.intp)
    np.clip(index, 0, BUCKETS - 1, out=index)
    return np.bincount(index, minlength=BUCKETS), int(known.size)


def binned_roc_auc(per_bucket: np.ndarray[Any, Any], positive: FloatArray) -> float | None:
    """expected_roc_auc over buckets: `per_bucket` rows with a calibrated P(positive) of `positive`
    each, ranked by bucket (one bucket: one tied step)."""
    true_pos = np.cumsum((per_bucket * positive)[::-1])
    false_pos = np.cumsum((per_bucket * (1 - positive))[::-1])
    if true_pos[-1] <= 0 or false_pos[-1] <= 0:
        return None
    tpr = np.r_[0.0, true_pos / true_pos[-1]]
    fpr = np.r_[0.0, false_pos / false_pos[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def estimate(calibration: Calibration, confidence: FloatArray, score: FloatArray | None) -> dict[str, float]:
    """A window's estimated accuracy (and ROC-AUC for a binary classifier); empty without scores."""
    binary = score is not None and calibration.positive_class is not None and bool(calibration.score_knots)
    if binary:
        assert score is not None
        # A binary classifier's confidence is max(score, 1 - score): its buckets are the score's, folded.
        by_score, known = counts(score)
        per_bucket = by_score + by_score[::-1]
        per_bucket[: BUCKETS // 2] = 0
    else:
        per_bucket, known = counts(confidence)
    if known == 0:
        return {}
    right = calibrated(calibration.confidence_knots, calibration.confidence_correct, CENTRES)
    found = {"accuracy": float(per_bucket @ right) / known}
    if binary:
        positive = calibrated(calibration.score_knots, calibration.score_positive, CENTRES)
        auc = binned_roc_auc(by_score, positive)
        if auc is not None:
            found["roc_auc"] = auc
    return found


def realised_accuracy(labels: list[str], predictions: list[str]) -> float:
    """The share of right predictions (for recording next to an estimate)."""
    return float(np.mean([a == b for a, b in zip(labels, predictions, strict=True)])) if labels else float("nan")
