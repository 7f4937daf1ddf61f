"""Input columns as every model sees them: the same coercion at training, evaluation and serving.

The fitted pipeline (imputation, scaling, one-hot encoding) lives inside the model artifact;
this only turns raw values (CSV cells, JSON fields) into the dtypes the pipeline was fitted on:
float64 for numeric columns (missing as NaN), strings for categorical and boolean ones (missing
as the category `__missing__`, so exported ONNX graphs see plain strings too), and float64
seconds since the epoch for datetimes (ISO 8601 text, with or without an offset, read as UTC
when it has none; or numbers, read as epoch seconds; unreadable as NaN).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from shared.contract.spec import Feature

MISSING = "__missing__"


def prepare(frame: pd.DataFrame, features: Iterable[Feature]) -> pd.DataFrame:
    """The feature columns of `frame`, coerced; raises KeyError naming missing columns."""
    wanted = list(features)
    missing = [f.name for f in wanted if f.name not in frame.columns]
    if missing:
        raise KeyError(f"missing feature columns: {', '.join(missing)}")
    columns: dict[str, Any] = {}
    for feature in wanted:
        column = frame[feature.name]
        if feature.type == "numeric":
            columns[feature.name] = pd.to_numeric(column, errors="coerce").astype("float64")
        elif feature.type == "datetime":
            columns[feature.name] = epoch_seconds(column)
        else:
            columns[feature.name] = pd.Series(
                [_category(v) for v in column.astype(object)], index=frame.index, dtype=object
            )
    return pd.DataFrame(columns, index=frame.index)


def _category(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def epoch_seconds(column: pd.Series) -> pd.Series:
    """A datetime column as float64 seconds since the epoch (NaN where unreadable or missing)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return _seconds(pd.to_datetime(column, utc=True))
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("float64")
    numbers = pd.to_numeric(column, errors="coerce")
    text = column.where(numbers.isna() & column.notna())
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    return numbers.astype("float64").fillna(_seconds(parsed))


def _seconds(stamps: pd.Series) -> pd.Series:
    # Whatever the unit pandas stores (ns, us), a difference divided by one second is seconds.
    return ((stamps - EPOCH) / pd.Timedelta(seconds=1)).astype("float64")


EPOCH = pd.Timestamp(0, tz="UTC")
