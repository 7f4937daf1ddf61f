"""Derived features, computed inside the fitted pipeline from a fixed set of operations (no code
in the spec): so serving computes exactly what training did, from the raw columns alone.

`DeriveFeatures` is the pipeline's first step: it takes the raw columns as `prepare` coerced them
(numbers as float64, datetimes as float64 seconds since the epoch, categories as strings with
`__missing__`) and appends one float64 column per derived feature, in spec order, so a derived
feature may use the ones before it. Every operation gives a number (missing as NaN):

  ratio, difference, sum, product   of two or more numeric columns; ratio's `on_zero` is `nan`
                                    (imputed later, like any missing value) or `zero`
  log1p, clip                       of one numeric column (clip: `min` and/or `max`)
  days_since                        a datetime against `against`: another datetime column or `now`
  month, weekday, hour              date parts of a datetime (UTC; Monday is 0)
  is_missing                        1.0 where the column is missing, else 0.0 (any type)
  bucketize                         the index of the `edges` interval a number falls in (0 … len(edges))

The module depends on NumPy, pandas and scikit-learn only, so an MLflow export can carry it as code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

MISSING = "__missing__"
SECONDS_PER_DAY = 86_400.0


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray[Any, Any]:
    return np.asarray(pd.to_numeric(frame[name], errors="coerce"), dtype=np.float64)


def _dates(frame: pd.DataFrame, name: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(_numbers(frame, name), unit="s", utc=True, errors="coerce"))


def compute(frame: pd.DataFrame, derived: Sequence[dict[str, Any]], *, now: float | None = None) -> pd.DataFrame:
    """The derived columns of `frame` (raw columns prepared, earlier derived ones appended as it goes)."""
    work = frame.copy()
    out: dict[str, np.ndarray[Any, Any]] = {}
    clock = time.time() if now is None else now
    for item in derived:
        op, name, inputs = item["op"], item["name"], list(item["of"])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if op in ("ratio", "difference", "sum", "product"):
                values = [_numbers(work, i) for i in inputs]
                if op == "sum":
                    column = np.sum(values, axis=0)
                elif op == "product":
                    column = np.prod(values, axis=0)
                elif op == "difference":
                    column = values[0] - np.sum(values[1:], axis=0)
                else:
                    denominator = np.prod(values[1:], axis=0)
                    column = values[0] / denominator
                    zero = denominator == 0
                    column[zero] = 0.0 if item.get("on_zero", "nan") == "zero" else np.nan
            elif op == "log1p":
                column = np.log1p(_numbers(work, inputs[0]))
                column[~np.isfinite(column)] = np.nan  # log1p of -1 and below has no value
            elif op == "clip":
                column = np.clip(_numbers(work, inputs[0]), item.get("min"), item.get("max"))
            elif op == "days_since":
                against = item.get("against", "now")
                reference = np.full(len(work), clock) if against == "now" else _numbers(work, against)
                column = (reference - _numbers(work, inputs[0])) / SECONDS_PER_DAY
            elif op in ("month", "weekday", "hour"):
                dates = _dates(work, inputs[0])
                part = {"month": dates.month, "weekday": dates.day_of_week, "hour": dates.hour}[op]
                column = np.asarray(part, dtype=np.float64)
            elif op == "is_missing":
                raw = work[inputs[0]]
                column = np.asarray(raw.isna() | (raw.astype(object) == MISSING), dtype=np.float64)
            elif op == "bucketize":
                numbers = _numbers(work, inputs[0])
                column = np.digitize(numbers, np.asarray(item["edges"], dtype=np.float64)).astype(np.float64)
                column[np.isnan(numbers)] = np.nan
            else:
                raise ValueError(f"unknown derived-feature operation {op!r}")
        out[name] = np.asarray(column, dtype=np.float64)
        work[name] = out[name]
    return pd.DataFrame(out, index=frame.index)


class DeriveFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """The pipeline step that appends the derived columns (its `derived` are the spec's entries)."""

    def __init__(self, derived: list[dict[str, Any]] | None = None) -> None:
        self.derived = derived

    def fit(self, x: pd.DataFrame, y: Any = None) -> DeriveFeatures:
        """Nothing to learn: the operations are fixed."""
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        """The raw columns with the derived ones appended."""
        derived = compute(x, self.derived or [])
        return pd.concat([x, derived], axis=1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray[Any, Any]:
        """Raw names, then derived names."""
        raw = list(input_features) if input_features is not None else []
        return np.asarray(raw + [d["name"] for d in self.derived or []], dtype=object)
