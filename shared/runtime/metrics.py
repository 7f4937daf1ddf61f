"""Model metrics, computed the same way by the trainer (validation) and the evaluator (test split)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from sklearn import metrics as skm


def evaluate(task: str, model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Every metric of the task on (x, y)."""
    predicted = model.predict(x)
    if task == "regression":
        return {
            "r2": float(skm.r2_score(y, predicted)),
            "mae": float(skm.mean_absolute_error(y, predicted)),
            "rmse": float(math.sqrt(skm.mean_squared_error(y, predicted))),
            "mape": float(skm.mean_absolute_percentage_error(y, predicted)),
        }
    classes = list(model.classes_)
    binary = len(classes) == 2
    average = "binary" if binary else "weighted"
    positive = classes[-1]
    found = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)),
        "f1": float(skm.f1_score(y, predicted, average=average, pos_label=positive, zero_division=0)),
        "f1_macro": float(skm.f1_score(y, predicted, average="macro", zero_division=0)),
        "precision": float(skm.precision_score(y, predicted, average=average, pos_label=positive, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, average=average, pos_label=positive, zero_division=0)),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        found["log_loss"] = float(skm.log_loss(y, proba, labels=classes))
        if len(set(y)) > 1:
            found["roc_auc"] = float(
                skm.roc_auc_score(y, proba[:, 1]) if binary else skm.roc_auc_score(y, proba, multi_class="ovr")
            )
    return found


LOWER_IS_BETTER = frozenset({"mae", "rmse", "mape", "log_loss"})


def live_metrics(task: str, truth: list[str], predicted: list[str], scores: list[float] | None) -> dict[str, float]:
    """Metrics of served predictions against labels that arrived later (values as logged, as strings).

    Classification: accuracy, precision, recall, F1 (the positive class is the last in sorted
    order, as scikit-learn's classes_), and ROC-AUC when each prediction's score for that class is
    known; regression: MAE and RMSE.
    """
    if task == "regression":
        y, p = [float(v) for v in truth], [float(v) for v in predicted]
        return {
            "mae": float(skm.mean_absolute_error(y, p)),
            "rmse": float(math.sqrt(skm.mean_squared_error(y, p))),
        }
    classes = sorted(set(truth) | set(predicted))
    binary = len(classes) == 2
    average = "binary" if binary else "weighted"
    positive = classes[-1]
    found = {
        "accuracy": float(skm.accuracy_score(truth, predicted)),
        "f1": float(skm.f1_score(truth, predicted, average=average, pos_label=positive, zero_division=0)),
        "precision": float(skm.precision_score(truth, predicted, average=average, pos_label=positive, zero_division=0)),
        "recall": float(skm.recall_score(truth, predicted, average=average, pos_label=positive, zero_division=0)),
    }
    if binary and scores is not None and len(set(truth)) > 1:
        found["roc_auc"] = float(skm.roc_auc_score([t == positive for t in truth], scores))
    return found
