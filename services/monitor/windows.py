"""Windows of live predictions: from `Prediction` records to columns, and from columns to drift.

Pure: no I/O. A chunk holds the rows of one PredictionsLogged for one version, column by column:
numeric features as float64 (null as NaN), categorical ones as fixed-width strings, and beside
them what canary analysis and performance need (`__prediction__`, `__role__`, `__latency_ms__`,
`__confidence__`, `__served_at__`). Which features are numeric is read from the values themselves
(numbers are numeric, anything else categorical), so ingestion needs no spec or profile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from services.monitor import drift
from shared.events import CategoricalProfile, FeatureDrift, Prediction, ReferenceProfile
from shared.spec import Monitoring

PREDICTION = "__prediction__"
ROLE = "__role__"
LATENCY = "__latency_ms__"
CONFIDENCE = "__confidence__"
SERVED_AT = "__served_at__"
META = (PREDICTION, ROLE, LATENCY, CONFIDENCE, SERVED_AT)
MIN_ROWS_BY_TIME = 30


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def columns_of(predictions: Sequence[Prediction]) -> dict[str, np.ndarray[Any, Any]]:
    """The rows of one version's predictions, column by column."""
    names: dict[str, bool] = {}
    for p in predictions:
        for name, value in p.features.items():
            if value is not None and name not in names:
                names[name] = _is_number(value)
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for name, numeric in names.items():
        cells = [p.features.get(name) for p in predictions]
        if numeric:
            columns[name] = np.array([v if _is_number(v) else math.nan for v in cells], dtype=np.float64)
        else:
            columns[name] = np.array(["" if v is None else str(v) for v in cells], dtype=np.str_)
    columns[PREDICTION] = np.array([str(p.prediction) for p in predictions], dtype=np.str_)
    columns[ROLE] = np.array([p.role for p in predictions], dtype=np.str_)
    columns[LATENCY] = np.array([p.latency_ms for p in predictions], dtype=np.float64)
    columns[CONFIDENCE] = np.array(
        [max(p.probabilities.values()) if p.probabilities else math.nan for p in predictions], dtype=np.float64
    )
    columns[SERVED_AT] = np.array([p.served_at.timestamp() for p in predictions], dtype=np.float64)
    return columns


def concatenate(chunks: Iterable[dict[str, np.ndarray[Any, Any]]]) -> dict[str, np.ndarray[Any, Any]]:
    """One window's columns from its chunks (a column missing from a chunk is filled as missing)."""
    chunks = list(chunks)
    names = {name for chunk in chunks for name in chunk}
    joined: dict[str, np.ndarray[Any, Any]] = {}
    for name in names:
        parts = []
        for chunk in chunks:
            rows = len(chunk[PREDICTION])
            if name in chunk:
                parts.append(chunk[name])
            else:
                numeric = any(c[name].dtype.kind == "f" for c in chunks if name in c)
                parts.append(np.full(rows, math.nan) if numeric else np.full(rows, "", dtype=np.str_))
        kinds = {p.dtype.kind for p in parts}
        joined[name] = np.concatenate(parts if kinds != {"f", "U"} else [p.astype(np.str_) for p in parts])
    return joined


def should_close(rows: int, age_seconds: float, policy: Monitoring) -> bool:
    """A window closes at `window_rows` rows, or at `window_seconds` with at least 30 rows."""
    return rows >= policy.window_rows or (age_seconds >= policy.window_seconds and rows >= MIN_ROWS_BY_TIME)


def encode(values: np.ndarray[Any, Any], reference: drift.CategoricalReference) -> np.ndarray[Any, Any]:
    """String categories as the reference vocabulary's codes (-1: missing)."""
    code = reference.vocabulary.code
    return np.fromiter((code(v) if v != "" else -1 for v in values.tolist()), dtype=np.int64, count=values.size)


@dataclass(frozen=True)
class Drifted:
    """A window's drift verdicts, ready for DriftDetected."""

    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    drifted_share: float
    dataset_drift: bool
    missing: list[str]


def window_drift(profile: ReferenceProfile, columns: dict[str, np.ndarray[Any, Any]], policy: Monitoring) -> Drifted:
    """Test the window's features (and prediction) against the version's reference profile."""
    references: dict[str, drift.Reference] = {}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    missing = []
    for name, feature in profile.features.items():
        column = columns.get(name)
        if column is None:
            missing.append(name)
            continue
        if isinstance(feature, CategoricalProfile):
            categories = drift.CategoricalReference.from_profile(name, feature)
            arrays[name] = encode(column.astype(np.str_), categories)
            references[name] = categories
        else:
            references[name] = drift.NumericReference.from_profile(name, feature)
            arrays[name] = column if column.dtype.kind == "f" else _numbers(column)
    prediction: tuple[drift.Reference, np.ndarray[Any, Any]] | None = None
    if profile.prediction is not None and PREDICTION in columns:
        if isinstance(profile.prediction, CategoricalProfile):
            labels = drift.CategoricalReference.from_profile(PREDICTION, profile.prediction)
            prediction = (labels, encode(columns[PREDICTION], labels))
        else:
            values = drift.NumericReference.from_profile(PREDICTION, profile.prediction)
            prediction = (values, _numbers(columns[PREDICTION]))
    rules = drift.Policy(
        p_value=policy.drift.p_value,
        min_effect=policy.drift.min_effect,
        drifted_share=policy.drift.drifted_share,
        tests=dict(policy.drift.tests),
    )
    judged = drift.window_drift(references, arrays, rules, prediction=prediction)
    return Drifted(judged.features, judged.prediction, judged.drifted_share, judged.dataset_drift, missing)


def _numbers(column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.full(column.size, math.nan)
    for i, value in enumerate(column.tolist()):
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            pass
    return out


def severity(found: Drifted) -> Literal["info", "warning", "critical"]:
    """critical: the dataset drifted and so did the prediction; warning: the dataset drifted; else info."""
    if found.dataset_drift and found.prediction is not None and found.prediction.drifted:
        return "critical"
    return "warning" if found.dataset_drift else "info"


def span(columns: dict[str, np.ndarray[Any, Any]]) -> tuple[datetime, datetime]:
    """First and last serving time of a window's rows."""
    served = columns[SERVED_AT]
    return datetime.fromtimestamp(float(served.min()), UTC), datetime.fromtimestamp(float(served.max()), UTC)
