"""A model version as serving runs it: input checking against its feature schema, and fast
prediction. Serving loads every version through it, and the registry's import opens an upload the
same way before accepting it, so that an accepted import serves.

A version is loaded from its artifacts only after each one's SHA-256 matches the registry's
record. With a `model.onnx` it predicts through ONNX Runtime (`shared.runtime.onnxmodel`: one
input per feature as the trainer exports it, or one `[n, F]` matrix as notebooks often do);
otherwise through the skops pipeline. Either way the raw values are
coerced the way training coerced them (`shared.runtime.features`): numbers as floats (null as NaN),
categories as strings (null as `__missing__`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shared.contract.events import ArtifactRef
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.features import MISSING
from shared.runtime.modelfile import load_model
from shared.runtime.onnxmodel import OnnxModel
from shared.runtime.threads import wide

WARM_BATCHES = (1, 2, 8, 32)  # the batch sizes a new version is warmed up on
WARM_CALLS = 5

Kind = Literal["numeric", "categorical", "datetime"]
Row = list[Any]


class InputError(ValueError):
    """Rows that do not match the version's feature schema; `errors` names every bad field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))
        self.errors = errors


@dataclass(frozen=True)
class Feature:
    """One input column of a version."""

    name: str
    kind: Kind
    nullable: bool = True


def _number(value: Any) -> float | None:
    """A numeric cell as a float (null as NaN); None if it is not a number (booleans are not numbers)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _category(value: Any) -> str | None:
    """A categorical cell as training saw it; None if it cannot be one (lists, objects)."""
    if value is None:
        return MISSING
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _instant(value: Any) -> float | None:
    """A datetime cell as epoch seconds (null as NaN): ISO 8601 text (UTC unless it says otherwise)
    or a number of seconds; None if it is neither."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


Label = Callable[[int, str], str]


def _shown(value: float) -> str:
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def check_rows(
    features: tuple[Feature, ...], rows: list[Any], *, where: str = "instances", label: Label | None = None
) -> list[Row]:
    """The rows' feature values in schema order, coerced; raises InputError listing every bad field.

    A field is named `{where}[i].{feature}` (`{where}.{feature}` for one row not called
    "instances"), or as `label(i, feature)` says. Infinities are refused everywhere; a null or NaN
    only where the version's schema says the feature is not nullable.
    """
    checked: list[Row] = []
    errors: list[str] = []
    plan = [(f.name, f.kind == "numeric", f.kind == "categorical") for f in features]
    for index, row in enumerate(rows):
        if type(row) is dict:  # the usual case: finite numbers where numbers go, at C speed per cell
            values: Row = []
            for name, numeric, categorical in plan:
                raw = row.get(name, row)  # the row itself: absent
                kind = type(raw)
                if numeric and kind is float and raw - raw == 0.0:
                    values.append(raw)
                elif numeric and kind is int:
                    values.append(float(raw))
                elif categorical and kind is str:
                    values.append(raw)
                else:
                    break
            else:
                checked.append(values)
                continue
        values = _row(features, row, index, where, label, errors)
        checked.append(values)
    if errors:
        raise InputError(errors)
    return checked


def _row(
    features: tuple[Feature, ...], row: Any, index: int, where: str, label: Label | None, errors: list[str]
) -> Row:
    """One row's values, checked cell by cell; what is wrong goes to `errors`."""
    at = f"{where}[{index}]" if where == "instances" else where
    values: Row = []
    if not isinstance(row, dict):
        errors.append(f"{label(index, '') if label else at}: expected an object of features, got {_type_name(row)}")
        return values
    for feature in features:
        name = feature.name
        if name not in row:
            errors.append(f"{label(index, name) if label else f'{at}.{name}'}: required")
            continue
        raw = row[name]
        if feature.kind == "categorical":
            category = _category(raw)
            if category is None or (raw is None and not feature.nullable):
                place = label(index, name) if label else f"{at}.{name}"
                if category is None:
                    errors.append(f"{place}: expected a string, got {_type_name(raw)}")
                else:
                    errors.append(f"{place}: a value is required (the model was trained without missing values)")
            values.append(category)
            continue
        number = _number(raw) if feature.kind == "numeric" else _instant(raw)
        if number is None or not math.isfinite(number):
            problem = _number_problem(feature, raw, number)
            if problem:
                errors.append(f"{label(index, name) if label else f'{at}.{name}'}: {problem}")
        values.append(number)
    return values


def _number_problem(feature: Feature, raw: Any, number: float | None) -> str | None:
    """What is wrong with a numeric or datetime cell that is not a finite number (None: a missing
    value the schema allows)."""
    if number is None:
        if feature.kind == "numeric":
            return f"expected a number, got {_type_name(raw)}"
        shown = repr(raw)[:40] if isinstance(raw, str) else _type_name(raw)
        return f"expected an ISO 8601 datetime or epoch seconds, got {shown}"
    if number == number:
        return f"expected a finite number, got {_shown(number)}"
    if not feature.nullable:
        got = "null" if raw is None else "NaN"
        return f"a value is required, got {got} (the model was trained without missing values)"
    return None


def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Loaded:
    """A model version ready to predict."""

    model: str
    version: int
    task: Literal["classification", "regression"]
    features: tuple[Feature, ...]
    classes: list[Any] | None
    runtime: Literal["onnx", "skops"]
    session: Any
    memory_bytes: int
    loaded_at: float = field(default_factory=time.time)
    digest: str = ""
    derived: list[dict[str, Any]] = field(default_factory=list)  # the spec's derived features, as trained
    features_from: dict[str, Any] | None = None  # the Feast features it was trained on (a FeatureStoreLineage)
    call_seconds: float = 0.0  # a warm one-row call, as warm_up measured it

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """The feature names."""
        return frozenset(f.name for f in self.features)

    def predict(self, rows: list[Row]) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (and class probabilities, in `classes` order) for checked rows."""
        if self.runtime == "onnx":
            return self.session.run_rows(rows)  # type: ignore[no-any-return]

        frame = self.frame(rows)
        with wide(len(rows)):
            labels = self.session.predict(frame).tolist()
            if self.task == "classification" and hasattr(self.session, "predict_proba"):
                return labels, np.asarray(self.session.predict_proba(frame), dtype=np.float64).tolist()
        return labels, None

    def frame(self, rows: list[Row]) -> Any:
        """Checked rows as the frame the pipeline was fitted on."""
        import pandas as pd

        return pd.DataFrame(
            {
                f.name: pd.Series([row[j] for row in rows], dtype=object if f.kind == "categorical" else "float64")
                for j, f in enumerate(self.features)
            }
        )

    def derived_values(self, rows: list[Row]) -> list[dict[str, float | None]]:
        """The derived features the pipeline computed for these rows (none without a derive step),
        for the prediction log: drift is watched on them as on the raw ones."""
        if not self.derived:
            return [{} for _ in rows]
        from shared.runtime.derive import compute

        derived = compute(self.frame(rows), self.derived)
        return [{k: (None if v != v else float(v)) for k, v in record.items()} for record in derived.to_dict("records")]


def _ref(artifacts: list[ArtifactRef], name: str) -> ArtifactRef | None:
    return next((a for a in artifacts if a.name == name), None)


def load(store: ArtifactStore, model: str, version: int, artifacts: list[ArtifactRef], folder: Path) -> Loaded:
    """Download (checking digests) and load a version as serving runs it; ONNX when it has one,
    else skops.

    Raises ArtifactError (missing, tampered) or UntrustedArtifact; nothing half-loaded stays.
    """
    from shared.runtime.artifacts import ArtifactError

    folder.mkdir(parents=True, exist_ok=True)
    manifest_ref = _ref(artifacts, "manifest.json")
    if manifest_ref is None:
        raise ArtifactError(f"{model}@{version} has no manifest.json")
    store.get_file(manifest_ref.uri, folder / "manifest.json", sha256=manifest_ref.sha256)
    onnx_ref = _ref(artifacts, "model.onnx")
    chosen = onnx_ref if onnx_ref is not None else _ref(artifacts, "model.skops")
    if chosen is None:
        raise ArtifactError(f"{model}@{version} has neither model.onnx nor model.skops")
    store.get_file(chosen.uri, folder / chosen.name, sha256=chosen.sha256)
    return open_version(model, version, folder, digest=chosen.sha256 or "")


def features_of(schema: list[dict[str, Any]]) -> tuple[Feature, ...]:
    """A manifest's feature schema as serving checks rows against it."""
    kinds: dict[str, Kind] = {"numeric": "numeric", "datetime": "datetime"}
    return tuple(Feature(f["name"], kinds.get(f["kind"], "categorical"), bool(f.get("nullable", True))) for f in schema)


def open_version(model: str, version: int, folder: Path, *, digest: str = "") -> Loaded:
    """Load a version's files in `folder` (manifest.json, and model.onnx or else model.skops) the
    way serving runs them, and warm it up on a row it must answer (the manifest's `warm_up` row,
    an imported version's first reference row; else missing values where the schema allows them
    and zeros elsewhere). The registry's import opens an upload this way before accepting
    it, so that what is accepted serves. Raises UntrustedArtifact, OnnxModelError or the model's
    own error."""
    manifest = json.loads((folder / "manifest.json").read_text())
    features = features_of(manifest["feature_schema"])
    task: str | None = manifest.get("task")
    classes = manifest.get("classes")
    before = _rss_bytes()
    if (folder / "model.onnx").exists() and task in ("regression", "classification"):
        session: Any = OnnxModel.open(
            folder / "model.onnx",
            features=[f.name for f in features],
            numeric=[f.kind != "categorical" for f in features],
            task=task,  # type: ignore[arg-type]
            classes=classes,
        )
        classes = session.classes
        runtime: Literal["onnx", "skops"] = "onnx"
    else:
        session = load_model(folder / "model.skops")
        runtime = "skops"
        found = getattr(session, "classes_", None)
        task = "classification" if found is not None else "regression"
        classes = found.tolist() if found is not None else None
    loaded = Loaded(
        model=model,
        version=version,
        task=task,  # type: ignore[arg-type]
        features=features,
        classes=classes,
        runtime=runtime,
        session=session,
        memory_bytes=0,
        digest=digest,
        derived=list(manifest.get("derived") or []),
        features_from=manifest.get("features_from"),
    )
    warm_up(loaded, manifest.get("warm_up") or warm_up_row(features))  # fail early, not on a request
    loaded.memory_bytes = max(0, _rss_bytes() - before)
    return loaded


def warm_up(loaded: Loaded, row: Row) -> None:
    """Predict `row` alone and in the batch sizes micro-batching forms, so the first requests do
    not pay for first calls (allocations, lazy initialisation), and note what a warm one-row call
    takes (the median of `WARM_CALLS`): micro-batching decides from it whether the version's calls
    run inline or in a worker thread."""
    for size in WARM_BATCHES:
        loaded.predict([row] * size)
    seconds = []
    for _ in range(WARM_CALLS):
        began = time.perf_counter()
        loaded.predict([row])
        seconds.append(time.perf_counter() - began)
    loaded.call_seconds = float(np.median(seconds))


def warm_up_row(features: tuple[Feature, ...]) -> Row:
    """A row every version must answer: missing values where its schema allows them, else zeros."""
    return [
        (MISSING if f.kind == "categorical" else math.nan) if f.nullable else ("0" if f.kind == "categorical" else 0.0)
        for f in features
    ]
