"""The trainer's rules: the data contract, the split, the pipeline, the search and selection.

Pure: frames and specs in, values out (no storage, no bus). `fit.py` runs these in a worker process;
the reference profile and calibration are in `shared.runtime.profile`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import RandomizedSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.contract.events import CandidateResult, ContractViolation, GateResult
from shared.contract.spec import METRICS, Candidate, Choice, ModelSpec
from shared.runtime.derive import DeriveFeatures
from shared.runtime.features import epoch_seconds

# ---------------------------------------------------------------- the data contract


def _kind_ok(column: pd.Series, dtype: str) -> bool:
    values = column.dropna()
    if dtype == "numeric":
        return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if dtype == "integer":
        return pd.api.types.is_numeric_dtype(column) and bool(np.all(np.mod(values.astype(float), 1) == 0))
    if dtype == "boolean":
        return pd.api.types.is_bool_dtype(column) or set(map(str, values.unique())) <= {
            "True",
            "False",
            "true",
            "false",
            "0",
            "1",
        }
    return not pd.api.types.is_numeric_dtype(column)


def check_contract(frame: pd.DataFrame, spec: ModelSpec) -> list[ContractViolation]:
    """Every rule of the spec's data contract the frame breaks (an empty list: the data is fit)."""
    found: list[ContractViolation] = []

    def broke(column: str | None, rule: str, expected: str, observed: str) -> None:
        found.append(ContractViolation(column=column, rule=rule, expected=expected, observed=observed))

    contract = spec.contract
    rows = len(frame)
    if rows < contract.min_rows:
        broke(None, "min_rows", f">= {contract.min_rows} rows", f"{rows} rows")
    if contract.max_rows is not None and rows > contract.max_rows:
        broke(None, "max_rows", f"<= {contract.max_rows} rows", f"{rows} rows")
    needed = [f.name for f in spec.features] + [spec.target]
    needed += [name for name, rule in contract.columns.items() if rule.required and name not in needed]
    for name in needed:
        if name not in frame.columns:
            broke(name, "required", "column present", "column missing")
    for name, rule in contract.columns.items():
        if name not in frame.columns:
            continue
        column = frame[name]
        share = float(column.isna().mean()) if rows else 0.0
        if share > rule.max_null_fraction:
            broke(name, "max_null_fraction", f"<= {rule.max_null_fraction:g}", f"{share:.4g}")
        if rule.dtype is not None and not _kind_ok(column, rule.dtype):
            broke(name, "dtype", rule.dtype, str(column.dtype))
            continue
        numeric = pd.to_numeric(column, errors="coerce") if (rule.min is not None or rule.max is not None) else None
        if numeric is not None and numeric.notna().any():
            if rule.min is not None and numeric.min() < rule.min:
                broke(name, "min", f">= {rule.min:g}", f"min {numeric.min():g}")
            if rule.max is not None and numeric.max() > rule.max:
                broke(name, "max", f"<= {rule.max:g}", f"max {numeric.max():g}")
        if rule.domain is not None:
            outside = sorted(set(map(str, column.dropna().unique())) - set(rule.domain))
            if outside:
                shown = ", ".join(outside[:5]) + (f" (+{len(outside) - 5} more)" if len(outside) > 5 else "")
                broke(name, "domain", f"one of {', '.join(rule.domain)}", shown)
    for feature in spec.features:
        if feature.type != "datetime" or feature.name not in frame.columns:
            continue
        raw = frame[feature.name]
        unreadable = int((epoch_seconds(raw).isna() & raw.notna()).sum())
        if unreadable:
            broke(feature.name, "datetime", "ISO 8601 datetimes or epoch seconds", f"{unreadable} unreadable")
    if spec.target in frame.columns:
        target = frame[spec.target]
        if target.isna().any():
            broke(spec.target, "target_nulls", "no missing targets", f"{int(target.isna().sum())} missing")
        if spec.task == "classification" and target.nunique() < contract.min_class_count:
            broke(spec.target, "min_class_count", f">= {contract.min_class_count} classes", f"{target.nunique()}")
    return found


# ---------------------------------------------------------------- split, pipeline, search


@dataclass(frozen=True)
class Split:
    """Train / validation / test rows, seeded; test is held out for the evaluator."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def split(frame: pd.DataFrame, spec: ModelSpec) -> Split:
    """Seeded split into train, validation and test (stratified on the target for classification)."""
    s = spec.split
    stratify = spec.task == "classification" and s.stratify
    rest, test = train_test_split(
        frame, test_size=s.test, random_state=s.seed, stratify=frame[spec.target] if stratify else None
    )
    share = s.validation / (1 - s.test)
    train, validation = train_test_split(
        rest, test_size=share, random_state=s.seed + 1, stratify=rest[spec.target] if stratify else None
    )
    return Split(train=train, validation=validation, test=test)


def estimator_class(path: str) -> type[Any]:
    """The allowlisted estimator class named by `path`."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


TREE_FAMILIES = ("sklearn.ensemble.", "sklearn.tree.", "xgboost.", "lightgbm.")
# Defaults the spec may override: one thread per fit (the search runs fits one after another and
# a 2-core trainer shares its machine), and LightGBM's per-iteration chatter off.
LIBRARY_DEFAULTS: dict[str, dict[str, Any]] = {"xgboost.": {"n_jobs": 1}, "lightgbm.": {"n_jobs": 1, "verbose": -1}}


def build_pipeline(spec: ModelSpec, candidate: Candidate) -> Pipeline:
    """Derived features, then preprocessing, inside the pipeline (so serving applies the same from the
    raw columns), then the estimator. Datetimes reach the estimator only through derived features."""
    inputs = spec.model_inputs()
    numeric = [f.name for f in inputs if f.type == "numeric"]
    categorical = [f.name for f in inputs if f.type != "numeric"]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        # Trees do not care about scale, and a scaler in front of them makes the float32 ONNX graph
        # disagree with scikit-learn near split thresholds: they get imputation only.
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if not candidate.estimator.startswith(TREE_FAMILIES):
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        transformers.append(
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            )
        )
    params = dict(candidate.params)
    for prefix, defaults in LIBRARY_DEFAULTS.items():
        if candidate.estimator.startswith(prefix):
            params = {**defaults, **params}
    if "random_state" in estimator_class(candidate.estimator)().get_params() and "random_state" not in params:
        params["random_state"] = spec.split.seed
    derive = [("derive", DeriveFeatures([d.model_dump(mode="json") for d in spec.derived]))] if spec.derived else []
    return Pipeline(
        [
            *derive,
            ("preprocess", ColumnTransformer(transformers)),
            ("model", estimator_class(candidate.estimator)(**params)),
        ]
    )


def scorer(spec: ModelSpec, classes: int = 2) -> str:
    """scikit-learn scoring name of the spec's selection metric."""
    name = spec.selection_metric
    binary = classes <= 2
    return {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced_accuracy",
        "f1": "f1" if binary else "f1_weighted",
        "f1_macro": "f1_macro",
        "precision": "precision" if binary else "precision_weighted",
        "recall": "recall" if binary else "recall_weighted",
        "roc_auc": "roc_auc" if binary else "roc_auc_ovr",
        "log_loss": "neg_log_loss",
        "r2": "r2",
        "mae": "neg_mean_absolute_error",
        "rmse": "neg_root_mean_squared_error",
        "mape": "neg_mean_absolute_percentage_error",
    }[name]


def search_space(candidate: Candidate) -> dict[str, Any]:
    """The candidate's search space as scikit-learn distributions over pipeline parameters."""
    space: dict[str, Any] = {}
    for name, dimension in candidate.search.items():
        key = f"model__{name}"
        if isinstance(dimension, Choice):
            space[key] = list(dimension.values)
        elif dimension.integer:
            space[key] = stats.randint(math.floor(dimension.low), math.floor(dimension.high) + 1)
        elif dimension.log:
            space[key] = stats.loguniform(dimension.low, dimension.high)
        else:
            space[key] = stats.uniform(dimension.low, dimension.high - dimension.low)
    return space


@dataclass(frozen=True)
class Fitted:
    """One candidate fitted: the pipeline, its parameters and, when searched, its mean CV score in
    the metric's own units."""

    pipeline: Pipeline
    params: dict[str, Any]
    cv_score: float | None = None


def fit_candidate(spec: ModelSpec, candidate: Candidate, x: pd.DataFrame, y: pd.Series, *, n_jobs: int = 1) -> Fitted:
    """Fit one candidate (searching its space when it has one, `n_jobs` cross-validation fits at once
    on joblib's active backend: this process's cores, or a Dask cluster)."""
    pipeline = build_pipeline(spec, candidate)
    if not candidate.search:
        pipeline.fit(x, y)
        return Fitted(pipeline, dict(candidate.params))
    classes = int(y.nunique()) if spec.task == "classification" else 0
    common = {
        "scoring": scorer(spec, classes),
        "cv": spec.search.cv,
        "random_state": spec.split.seed,
        "n_jobs": n_jobs,
        "refit": True,
    }
    if spec.search.method == "halving":
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV

        search: Any = HalvingRandomSearchCV(
            pipeline, search_space(candidate), n_candidates=spec.search.iterations, **common
        )
    else:
        search = RandomizedSearchCV(pipeline, search_space(candidate), n_iter=spec.search.iterations, **common)
    search.fit(x, y)
    best = {key.removeprefix("model__"): _plain(value) for key, value in search.best_params_.items()}
    sign = -1.0 if str(common["scoring"]).startswith("neg_") else 1.0  # scikit-learn maximises negated losses
    return Fitted(search.best_estimator_, {**candidate.params, **best}, sign * float(search.best_score_))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------- selection


def better(spec: ModelSpec, score: float, than: float | None) -> bool:
    """Whether `score` beats `than` on the spec's selection metric."""
    if than is None:
        return True
    return score > than if METRICS[spec.selection_metric].higher_is_better else score < than


def refusal(checks: list[GateResult]) -> str | None:
    """Why a candidate cannot be chosen: the gates it fails, with their numbers; None if it passes."""
    failed = [g for g in checks if not g.passed]
    if not failed:
        return None
    return "; ".join(f"fails {g.name}: {_value(g.value)} (needs {g.comparator} {g.threshold:g})" for g in failed)


def _value(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.4g}"


def choose(spec: ModelSpec, tried: list[CandidateResult]) -> int | None:
    """The index of the best candidate on the selection metric among those that can pass the spec's
    gates (not refused, with a measured score); None when none can. A candidate that would be
    rejected is never chosen over one that would pass, however much better its score."""
    best: int | None = None
    for index, candidate in enumerate(tried):
        if candidate.refused is not None or math.isnan(candidate.score):
            continue
        if best is None or better(spec, candidate.score, tried[best].score):
            best = index
    return best


def none_passes(tried: list[CandidateResult]) -> str:
    """The run's reason when no candidate can pass: each one's."""
    reasons = "; ".join(f"{c.estimator.rsplit('.', 1)[-1]} {c.refused or 'has no validation score'}" for c in tried)
    return f"no candidate can pass the spec's gates: {reasons}"
