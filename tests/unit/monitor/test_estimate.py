"""Label-free performance estimation (CBPE): a classifier's calibration, fitted on its test split
at training time, estimates each window's accuracy and ROC-AUC close to the truth, with no drift
and under covariate drift; the trainer keeps the calibration in the reference profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from services.monitor import estimate
from shared.runtime.profile import calibration as calibrate


def world(rows: int, *, shift: float, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Two features; the truth is logistic in them, and does not change when the features move."""
    x = pd.DataFrame({"a": rng.normal(shift, 1, rows), "b": rng.normal(0, 1, rows)})
    p = 1 / (1 + np.exp(-(1.5 * x["a"] - x["b"])))
    return x, (rng.random(rows) < p).astype(int)


def test_estimated_accuracy_and_auc_follow_the_truth_without_and_under_covariate_drift() -> None:
    rng = np.random.default_rng(7)
    x_train, y_train = world(4000, shift=0.0, rng=rng)
    x_test, y_test = world(2000, shift=0.0, rng=rng)
    model = LogisticRegression().fit(x_train, y_train)
    calibration = calibrate(model, x_test, pd.Series(y_test))
    assert calibration is not None and calibration.positive_class == "1" and calibration.rows == 2000
    errors: dict[float, list[float]] = {0.0: [], 1.0: []}
    auc_errors = []
    for shift in errors:
        for _ in range(20):
            x, y = world(1000, shift=shift, rng=rng)
            probabilities = model.predict_proba(x)
            found = estimate.estimate(calibration, probabilities.max(axis=1), probabilities[:, 1])
            true_accuracy = float((probabilities.argmax(axis=1) == y).mean())
            errors[shift].append(abs(found["accuracy"] - true_accuracy))
            auc_errors.append(abs(found["roc_auc"] - roc_auc_score(y, probabilities[:, 1])))
    assert np.mean(errors[0.0]) < 0.03 and np.mean(errors[1.0]) < 0.03
    assert np.mean(auc_errors) < 0.03


def test_the_expected_auc_of_certain_labels_is_the_auc() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random(500)
    labels = (rng.random(500) < scores).astype(float)
    assert estimate.expected_roc_auc(scores, labels) == roc_auc_score(labels, scores)


def test_a_window_without_probabilities_has_no_estimate() -> None:
    rng = np.random.default_rng(1)
    x, y = world(500, shift=0.0, rng=rng)
    model = LogisticRegression().fit(x, y)
    calibration = calibrate(model, x, pd.Series(y))
    assert calibration is not None
    assert estimate.estimate(calibration, np.full(10, np.nan), None) == {}


def test_the_bucketed_estimate_matches_the_exact_one_on_every_row() -> None:
    rng = np.random.default_rng(5)
    x_train, y_train = world(3000, shift=0.0, rng=rng)
    model = LogisticRegression().fit(x_train, y_train)
    x_test, y_test = world(2000, shift=0.0, rng=rng)
    calibration = calibrate(model, x_test, pd.Series(y_test))
    assert calibration is not None and calibration.score_knots
    x, _ = world(50_000, shift=1.0, rng=rng)
    score = model.predict_proba(x)[:, 1]
    confidence = np.maximum(score, 1 - score)
    exact_accuracy = estimate.calibrated(calibration.confidence_knots, calibration.confidence_correct, confidence)
    positive = estimate.calibrated(calibration.score_knots, calibration.score_positive, score)
    exact_auc = estimate.expected_roc_auc(score, positive)
    found = estimate.estimate(calibration, confidence, score)
    assert exact_auc is not None
    assert abs(found["accuracy"] - exact_accuracy.mean()) < 1e-3
    assert abs(found["roc_auc"] - exact_auc) < 1e-3
