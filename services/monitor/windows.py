"""Windows of live predictions: from PredictionsLogged columns to arrays, and from arrays to drift.

Pure: no I/O. A chunk holds rows of one version, column by column: numeric features as float64
(null as NaN), categorical ones as int32 codes into the chunk's own vocabulary of strings, and
beside them what canary analysis and performance need (`__prediction__`, `__role__`, `__latency_ms__`,
`__confidence__`, `__score__`, `__served_at__`). Which features are numeric is read from the values themselves
(numbers are numeric, anything else categorical), so ingestion needs no spec or profile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from services.monitor import drift, estimate
from services.monitor.canary import Summary, quantile_bounds
from services.monitor.domain import Drifted
from shared.contract.events import Calibration, CategoricalProfile, PredictionsLogged, ReferenceProfile
from shared.contract.spec import Monitoring

PREDICTION = "__prediction__"
ROLE = "__role__"
LATENCY = "__latency_ms__"
CONFIDENCE = "__confidence__"
SCORE = "__score__"  # binary classifiers: the probability of the positive class (the last class name)
SERVED_AT = "__served_at__"
META = (PREDICTION, ROLE, LATENCY, CONFIDENCE, SCORE, SERVED_AT)
Columns = dict[str, np.ndarray[Any, Any]]  # a chunk or a window: name -> 1-D array
VOCABULARY = ".vocabulary"  # beside a categorical column's codes: the strings they stand for
REGRESSION_DISTINCT = 20  # more distinct predicted values than this, and no probabilities: a regressor


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int or (isinstance(value, int | float) and not isinstance(value, bool))


def columns_of(event: PredictionsLogged) -> Columns:
    """Every row of a batch, as arrays (one per feature, and the meta columns)."""
    columns: Columns = {}
    for name, cells in event.features.items():
        first = next((v for v in cells if v is not None), None)
        if first is None:
            continue  # a feature no row carried: absent, as in a chunk without it
        if _is_number(first):
            try:  # the usual case: numbers and nulls (numpy turns None into NaN)
                columns[name] = np.array(cells, dtype=np.float64)
                continue
            except (TypeError, ValueError):
                if sum(_is_number(v) for v in cells) * 2 >= len(cells):
                    columns[name] = np.array([v if _is_number(v) else math.nan for v in cells], dtype=np.float64)
                    continue
        _categorical(columns, name, cells)
    _categorical(columns, PREDICTION, event.prediction)
    _categorical(columns, ROLE, event.role)
    columns[LATENCY] = np.array(event.latency_ms, dtype=np.float64)
    if event.probabilities:
        shares = np.array(list(event.probabilities.values()), dtype=np.float64)  # None as NaN
        columns[CONFIDENCE] = np.fmax.reduce(shares, axis=0)
        if len(event.probabilities) == 2:
            columns[SCORE] = np.array(event.probabilities[max(event.probabilities)], dtype=np.float64)
    else:
        columns[CONFIDENCE] = np.full(event.rows, math.nan)
    # A batch's rows share few instants: each is converted once.
    seconds = {at: at.timestamp() for at in set(event.served_at)}
    columns[SERVED_AT] = np.array([seconds[at] for at in event.served_at], dtype=np.float64)
    return columns


def _categorical(columns: Columns, name: str, values: Sequence[Any]) -> None:
    """Store values as codes into the chunk's own vocabulary of their strings ("" is missing)."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if len(kinds) > 1:  # mixed kinds (1 and "1", True and 1): their strings are what count
        values = ["" if v is None else str(v) for v in values]
    codes, found = pd.factorize(np.asarray(values, dtype=object))
    vocabulary = ["" if v is None else v if type(v) is str else str(v) for v in found.tolist()]
    if (codes < 0).any():  # None, factorized as missing
        codes[codes < 0] = len(vocabulary)
        vocabulary.append("")
    if len(set(vocabulary)) < len(vocabulary):  # "" met both as itself and as None
        _categorical(columns, name, ["" if v is None else v for v in values])
        return
    columns[name] = codes.astype(np.int32)
    columns[name + VOCABULARY] = np.array(vocabulary, dtype=np.str_)


def rows_of(columns: Columns) -> int:
    """How many rows the columns hold."""
    return len(columns[LATENCY])


def take(columns: Columns, rows: slice | np.ndarray[Any, Any]) -> Columns:
    """Some rows of the columns; each vocabulary keeps only the strings those rows use."""
    taken: Columns = {}
    for name, values in columns.items():
        if name.endswith(VOCABULARY):
            continue
        if name + VOCABULARY in columns:
            used, codes = np.unique(values[rows], return_inverse=True)
            taken[name] = codes.astype(np.int32).reshape(-1)
            taken[name + VOCABULARY] = columns[name + VOCABULARY][used]
        else:
            taken[name] = values[rows]
    return taken


def categories(columns: Columns, name: str) -> np.ndarray[Any, Any]:
    """A categorical column's values as strings (for the few places that need them)."""
    found: np.ndarray[Any, Any] = columns[name + VOCABULARY][columns[name]]
    return found


def concatenate(chunks: Iterable[Columns]) -> Columns:
    """One window's columns from its chunks (a column missing from a chunk is filled as missing)."""
    chunks = list(chunks)
    names = {name for chunk in chunks for name in chunk if not name.endswith(VOCABULARY)}
    sizes = [len(chunk[LATENCY]) for chunk in chunks]
    joined: Columns = {}
    for name in names:
        if any(name + VOCABULARY in chunk for chunk in chunks):
            # One vocabulary for the window; each chunk's codes remapped into it (O(rows), no strings).
            vocabulary: dict[str, int] = {"": 0}
            parts = []
            for chunk, rows in zip(chunks, sizes, strict=True):
                if name + VOCABULARY in chunk:
                    local = chunk[name + VOCABULARY].tolist()
                    table = np.array([vocabulary.setdefault(v, len(vocabulary)) for v in local], dtype=np.int64)
                    parts.append(table[chunk[name]] if table.size else np.zeros(rows, dtype=np.int64))
                elif name in chunk:  # numbers where other chunks had strings: as strings
                    strings = ["" if math.isnan(v) else str(v) for v in chunk[name].tolist()]
                    parts.append(np.array([vocabulary.setdefault(v, len(vocabulary)) for v in strings]))
                else:
                    parts.append(np.zeros(rows, dtype=np.int64))
            joined[name] = np.concatenate(parts).astype(np.int64)
            joined[name + VOCABULARY] = np.array(list(vocabulary), dtype=np.str_)
        else:
            joined[name] = np.concatenate(
                [chunk.get(name, np.full(rows, math.nan)) for chunk, rows in zip(chunks, sizes, strict=True)]
            )
    return joined


def encode(columns: Columns, name: str, reference: drift.CategoricalReference) -> np.ndarray[Any, Any]:
    """A categorical column as the reference vocabulary's codes (-1: missing), through its own vocabulary."""
    if name + VOCABULARY not in columns:  # numbers where the reference had categories
        strings = ["" if math.isnan(v) else str(v) for v in columns[name].tolist()]
        local = {v: i for i, v in enumerate(dict.fromkeys(strings))}
        columns = {name: np.array([local[v] for v in strings]), name + VOCABULARY: np.array(list(local))}
    code = reference.vocabulary.code
    table = np.array([code(v) if v != "" else -1 for v in columns[name + VOCABULARY].tolist()], dtype=np.int64)
    codes: np.ndarray[Any, Any] = table[columns[name]]
    return codes


def window_drift(profile: ReferenceProfile, columns: Columns, policy: Monitoring) -> Drifted:
    """Test the window's features (and prediction) against the version's reference profile."""
    references: dict[str, drift.Reference] = {}
    arrays: Columns = {}
    missing = []
    for name, feature in profile.features.items():
        column = columns.get(name)
        if column is None:
            missing.append(name)
            continue
        if isinstance(feature, CategoricalProfile):
            labelled = drift.CategoricalReference.from_profile(name, feature)
            arrays[name] = encode(columns, name, labelled)
            references[name] = labelled
        else:
            references[name] = drift.NumericReference.from_profile(name, feature)
            arrays[name] = column if column.dtype.kind == "f" else _numbers(categories(columns, name))
    prediction: tuple[drift.Reference, np.ndarray[Any, Any]] | None = None
    if profile.prediction is not None and PREDICTION in columns:
        if isinstance(profile.prediction, CategoricalProfile):
            labels = drift.CategoricalReference.from_profile(PREDICTION, profile.prediction)
            prediction = (labels, encode(columns, PREDICTION, labels))
        else:
            values = drift.NumericReference.from_profile(PREDICTION, profile.prediction)
            prediction = (values, _numbers(categories(columns, PREDICTION)))
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


def span(columns: Columns) -> tuple[datetime, datetime]:
    """First and last serving time of a window's rows."""
    served = columns[SERVED_AT]
    return datetime.fromtimestamp(float(served.min()), UTC), datetime.fromtimestamp(float(served.max()), UTC)


def summarize(columns: Columns, calibration: Calibration | None = None, *, drifted: bool = False) -> Summary:
    """A window's summary for canary analysis: latency (of answered rows, not shadow copies), the
    predictions' shares, the broken-candidate checks and, with a calibration, the estimated
    performance (CBPE)."""
    roles = categories(columns, ROLE)
    answered = roles != "shadow"
    # Every row of a request carries the request's latency, so the rows of one request are one
    # observation: the p99 and its interval are taken over requests (the distinct values), or a
    # single slow request of 20 rows would be 20 of a few hundred samples and decide a rollback.
    latency = np.unique(columns[LATENCY][answered] if answered.any() else columns[LATENCY])
    confidence = columns[CONFIDENCE]
    labels = columns[PREDICTION + VOCABULARY]
    counts = np.bincount(columns[PREDICTION], minlength=len(labels))
    rows = int(columns[LATENCY].size)
    missing = sum(c for k, c in zip(labels.tolist(), counts.tolist(), strict=True) if k in ("", "nan", "None"))
    known = confidence[~np.isnan(confidence)]
    out_of_range = int(((known < -1e-9) | (known > 1 + 1e-9)).sum())
    score = columns.get(SCORE)
    found = estimate.estimate(calibration, confidence, score) if calibration is not None else {}
    shares = {str(k): float(c) / rows for k, c in zip(labels.tolist(), counts.tolist(), strict=True) if c}
    deciles: list[float] = []
    if not known.size and len(shares) > REGRESSION_DISTINCT:  # a regressor: its values' deciles, not shares
        values = _numbers(labels)[columns[PREDICTION]]
        values = values[~np.isnan(values)]
        deciles = np.quantile(values, np.linspace(0.1, 0.9, 9)).tolist() if values.size else []
    return Summary(
        rows=rows,
        latency_p99_ms=float(np.percentile(latency, 99)) if latency.size else 0.0,
        latency_p99_bounds=quantile_bounds(latency) if latency.size else None,
        prediction_shares={} if deciles else shares,
        prediction_deciles=deciles,
        distinct_predictions=int((counts > 0).sum()),
        estimated=found,
        missing_share=missing / rows if rows else 0.0,
        out_of_range_share=out_of_range / rows if rows else 0.0,
        drifted=drifted,
    )
