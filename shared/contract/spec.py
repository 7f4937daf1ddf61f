"""The model spec: what a model is, how it is trained, judged, rolled out, watched and alerted on.

Operators write it as YAML and apply it (`modelbus apply -f spec.yaml`); the registry keeps every
revision and publishes it as `ModelSpecApplied` on a compacted topic, from which every service
builds its view. `schemas/model-spec.json` is generated from `ModelSpec`.

Validation refuses a spec with every error, each named by its YAML path (and line, when the
text is at hand). Estimators come from an allowlist; hyperparameters must be constructor
arguments of the class, scalar, and strings are plain words, so a spec cannot carry code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

_NAME = r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$"
NAME_PATTERN = _NAME  # a model's, dataset's, workspace's or service account's name
_WORD = r"^[A-Za-z0-9_.+-]{1,64}$"
# A column name: letters, digits and a few separators; never quotes, brackets or operators.
_COLUMN = r"^[A-Za-z0-9_][A-Za-z0-9_. /:-]{0,127}$"
MAX_CANDIDATES = 8
MAX_CHOICES = 64
MAX_FITS = 2000

Task = Literal["classification", "regression"]
Word = Annotated[str, Field(pattern=_WORD, description="A plain word: letters, digits, '_', '.', '+', '-'.")]


def _param_value(value: Any) -> bool | int | float | str | None:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and re.fullmatch(_WORD, value):
        return value
    raise ValueError(
        f"{value!r} is not a hyperparameter value: use a number, true/false, null or a plain word "
        "(letters, digits, '_', '.', '+', '-'; at most 64)"
    )


ParamValue = Annotated[
    bool | int | float | str | None,
    PlainValidator(_param_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "number"},
                {"type": "null"},
                {"type": "string", "pattern": _WORD},
            ],
            "description": "A number, a boolean, null or a plain word.",
        }
    ),
]


@dataclass(frozen=True)
class MetricInfo:
    """A metric a spec may select on, gate on or watch."""

    task: Task
    higher_is_better: bool


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("classification", True),
    "balanced_accuracy": MetricInfo("classification", True),
    "f1": MetricInfo("classification", True),
    "f1_macro": MetricInfo("classification", True),
    "precision": MetricInfo("classification", True),
    "recall": MetricInfo("classification", True),
    "roc_auc": MetricInfo("classification", True),
    "log_loss": MetricInfo("classification", False),
    "r2": MetricInfo("regression", True),
    "mae": MetricInfo("regression", False),
    "rmse": MetricInfo("regression", False),
    "mape": MetricInfo("regression", False),
}

ESTIMATORS: dict[str, Task] = {
    "sklearn.linear_model.LogisticRegression": "classification",
    "sklearn.ensemble.RandomForestClassifier": "classification",
    "sklearn.ensemble.ExtraTreesClassifier": "classification",
    "sklearn.ensemble.GradientBoostingClassifier": "classification",
    "sklearn.ensemble.HistGradientBoostingClassifier": "classification",
    "sklearn.tree.DecisionTreeClassifier": "classification",
    "sklearn.neighbors.KNeighborsClassifier": "classification",
    "sklearn.naive_bayes.GaussianNB": "classification",
    "sklearn.linear_model.LinearRegression": "regression",
    "sklearn.linear_model.Ridge": "regression",
    "sklearn.linear_model.Lasso": "regression",
    "sklearn.linear_model.ElasticNet": "regression",
    "sklearn.ensemble.RandomForestRegressor": "regression",
    "sklearn.ensemble.ExtraTreesRegressor": "regression",
    "sklearn.ensemble.GradientBoostingRegressor": "regression",
    "sklearn.ensemble.HistGradientBoostingRegressor": "regression",
    "sklearn.tree.DecisionTreeRegressor": "regression",
    "sklearn.neighbors.KNeighborsRegressor": "regression",
    "xgboost.XGBClassifier": "classification",
    "xgboost.XGBRegressor": "regression",
    "lightgbm.LGBMClassifier": "classification",
    "lightgbm.LGBMRegressor": "regression",
}
EstimatorPath = Literal[
    "sklearn.linear_model.LogisticRegression",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.ensemble.ExtraTreesClassifier",
    "sklearn.ensemble.GradientBoostingClassifier",
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "sklearn.tree.DecisionTreeClassifier",
    "sklearn.neighbors.KNeighborsClassifier",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.linear_model.LinearRegression",
    "sklearn.linear_model.Ridge",
    "sklearn.linear_model.Lasso",
    "sklearn.linear_model.ElasticNet",
    "sklearn.ensemble.RandomForestRegressor",
    "sklearn.ensemble.ExtraTreesRegressor",
    "sklearn.ensemble.GradientBoostingRegressor",
    "sklearn.ensemble.HistGradientBoostingRegressor",
    "sklearn.tree.DecisionTreeRegressor",
    "sklearn.neighbors.KNeighborsRegressor",
    "xgboost.XGBClassifier",
    "xgboost.XGBRegressor",
    "lightgbm.LGBMClassifier",
    "lightgbm.LGBMRegressor",
]


@functools.cache
def estimator_params(path: str) -> frozenset[str]:
    """Constructor arguments of an allowlisted estimator (imports its library on first use). XGBoost
    takes most of its parameters through **kwargs, so its own get_params() names them."""
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    named = {p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")}
    return frozenset(named | set(cls().get_params()) if module == "xgboost" else named)


class SpecModel(BaseModel):
    """A part of a spec: frozen; unknown keys are refused (a typo is an error, not a silent default).

    A service reading a spec from the bus validates with context {"lenient": True}: keys added by
    a newer spec format are dropped rather than refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_when_lenient(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context and info.context.get("lenient"):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data


class Feature(SpecModel):
    """An input column of the model."""

    name: str = Field(pattern=_COLUMN, description="Column name (letters, digits, _ . - / : and spaces).")
    type: Literal["numeric", "categorical", "boolean", "datetime"] = Field(
        description="How the column is treated; a datetime (ISO 8601 text or epoch seconds) feeds derived features."
    )


DerivedOp = Literal[
    "ratio",
    "difference",
    "sum",
    "product",
    "log1p",
    "clip",
    "days_since",
    "month",
    "weekday",
    "hour",
    "is_missing",
    "bucketize",
]
NARY_OPS = ("ratio", "difference", "sum", "product")
DATE_OPS = ("days_since", "month", "weekday", "hour")


class DerivedFeature(SpecModel):
    """A numeric feature computed inside the pipeline from others, by one fixed operation (no code)."""

    name: str = Field(pattern=_COLUMN, description="Name of the derived column.")
    op: DerivedOp = Field(description="The operation (see shared.runtime.derive).")
    of: list[str] = Field(min_length=1, max_length=16, description="Input columns: raw features or earlier derived.")
    on_zero: Literal["nan", "zero"] = Field(
        default="nan", description="ratio: a zero denominator gives NaN (imputed like a missing value) or 0."
    )
    min: float | None = Field(default=None, description="clip: lower bound.")
    max: float | None = Field(default=None, description="clip: upper bound.")
    edges: list[float] | None = Field(default=None, max_length=1000, description="bucketize: increasing edges.")
    against: str = Field(default="now", description="days_since: a datetime feature (the row's event time) or now.")

    @field_validator("of", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ColumnRule(SpecModel):
    """Data-contract rules of one column."""

    required: bool = Field(default=True, description="The column must be present.")
    dtype: Literal["numeric", "integer", "string", "boolean"] | None = Field(
        default=None, description="Expected kind of values."
    )
    max_null_fraction: float = Field(default=0.0, ge=0, le=1, description="Largest share of nulls allowed.")
    min: float | None = Field(default=None, description="Smallest value allowed (numeric).")
    max: float | None = Field(default=None, description="Largest value allowed (numeric).")
    domain: list[str] | None = Field(
        default=None, min_length=1, max_length=10_000, description="Allowed categories (categorical)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Contract(SpecModel):
    """What the data must satisfy before anything is trained on it."""

    min_rows: int = Field(default=1, ge=1, description="Fewest rows accepted.")
    max_rows: int | None = Field(default=None, ge=1, description="Most rows accepted, if bounded.")
    columns: dict[str, ColumnRule] = Field(default_factory=dict, description="Rules per column name.")
    min_class_count: int = Field(default=2, ge=1, description="Classification: fewest distinct target classes.")


class Choice(SpecModel):
    """A search dimension over listed values."""

    values: list[ParamValue] = Field(min_length=1, max_length=MAX_CHOICES, description="Values to try.")


class Range(SpecModel):
    """A search dimension over a numeric interval."""

    low: float = Field(description="Lower bound.")
    high: float = Field(description="Upper bound.")
    log: bool = Field(default=False, description="Sample on a log scale.")
    integer: bool = Field(default=False, description="Sample integers.")

    @model_validator(mode="after")
    def _bounded(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if abs(self.low) > 1e9 or abs(self.high) > 1e9:
            raise ValueError("bounds must lie within ±1e9")
        return self


class Candidate(SpecModel):
    """One estimator to try, with fixed hyperparameters and an optional search space."""

    estimator: EstimatorPath = Field(description="Class path from the allowlist (scikit-learn, XGBoost, LightGBM).")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="Fixed hyperparameters.")
    search: dict[str, Choice | Range] = Field(default_factory=dict, description="Hyperparameters to search.")


class Search(SpecModel):
    """How a candidate's search space is explored (bounded)."""

    method: Literal["random", "halving"] = Field(default="random", description="Randomized or successive halving.")
    iterations: int = Field(default=10, ge=1, le=200, description="Parameter settings tried per candidate.")
    cv: int = Field(default=3, ge=2, le=10, description="Cross-validation folds.")


class Split(SpecModel):
    """Seeded train / validation / test split; the test split is kept for the evaluator."""

    validation: float = Field(default=0.2, gt=0, lt=0.5, description="Share for validation.")
    test: float = Field(default=0.2, gt=0, lt=0.5, description="Share held out for evaluation.")
    seed: int = Field(default=42, ge=0, description="Random seed.")
    stratify: bool = Field(default=True, description="Stratify on the target (classification).")


class Gate(SpecModel):
    """An evaluation gate: an absolute bound and/or the largest regression against the champion."""

    metric: str = Field(description="Metric on the test split.")
    min: float | None = Field(default=None, description="Smallest value allowed.")
    max: float | None = Field(default=None, description="Largest value allowed.")
    max_regression: float | None = Field(
        default=None, ge=0, description="Largest loss against the champion on the same split (metric units)."
    )
    max_relative_regression: float | None = Field(
        default=None, ge=0, le=1, description="Largest loss against the champion as a share of its value."
    )

    @model_validator(mode="after")
    def _something(self) -> Gate:
        bounds = (self.min, self.max, self.max_regression, self.max_relative_regression)
        if all(b is None for b in bounds):
            raise ValueError("a gate needs min, max, max_regression or max_relative_regression")
        return self


class Fairness(SpecModel):
    """A fairness gate across the groups of a segment column of the test data."""

    segment: str = Field(min_length=1, description="Column that names the groups (need not be a feature).")
    metric: Literal["demographic_parity", "equal_opportunity"] = Field(
        default="demographic_parity",
        description="Difference of positive-prediction rates, or of true-positive rates, between groups.",
    )
    max_difference: float = Field(default=0.1, ge=0, le=1, description="Largest difference allowed.")


class Evaluation(SpecModel):
    """Gates every candidate passes besides the metric gates."""

    max_latency_ms_row: float = Field(default=50, gt=0, description="p99 latency of one-row predictions, ms.")
    max_latency_ms_batch: float = Field(default=2000, gt=0, description="p99 latency of a 1,000-row batch, ms.")
    max_latency_ratio: float | None = Field(
        default=None,
        ge=1,
        description="Largest one-row p99 of the candidate over the champion's, both measured in the same run; "
        "null: not compared.",
    )
    min_class_rate: float = Field(default=0.0, ge=0, le=1, description="Smallest share of predictions per class.")
    max_class_rate: float = Field(default=1.0, ge=0, le=1, description="Largest share of predictions per class.")
    fairness: Fairness | None = Field(default=None, description="Fairness gate, if wanted.")
    min_importance_correlation: float | None = Field(
        default=None, ge=-1, le=1, description="Least correlation of feature importances with the champion's."
    )


class Segment(SpecModel):
    """Requests whose field has one of these values always get the stable version."""

    field: str = Field(min_length=1, description="Request field.")
    values: list[str] = Field(min_length=1, description="Values that exclude a request from the canary.")


class Rollout(SpecModel):
    """How an approved version reaches all traffic."""

    steps: list[float] = Field(
        default=[10, 25, 50, 100], min_length=1, max_length=20, description="Canary percentages, ending at 100."
    )
    bake_seconds: float = Field(default=60, ge=0, le=86_400, description="Least time at each step.")
    min_samples: int = Field(default=100, ge=1, description="Canary requests needed before a step is judged.")
    sticky_key: str | None = Field(default=None, description="Request field hashed so one key sees one version.")
    excluded_segments: list[Segment] = Field(default_factory=list, description="Segments kept on stable.")
    shadow: bool = Field(default=False, description="First mirror traffic to the candidate without answering.")
    max_error_rate_increase: float = Field(
        default=0.02, ge=0, le=1, description="Largest canary error-rate excess over stable."
    )
    max_latency_ratio: float = Field(default=1.5, ge=1, description="Largest canary/stable p99 latency ratio.")
    latency_slack_ms: float = Field(
        default=5.0, ge=0, description="A canary p99 at most this many ms above stable passes whatever the ratio."
    )
    max_metric_drop: float = Field(default=0.05, ge=0, description="Largest drop of the live metric versus stable.")


class DriftPolicy(SpecModel):
    """Drift tests and thresholds."""

    tests: dict[str, Literal["ks", "chi2", "psi", "wasserstein", "jensenshannon"]] = Field(
        default_factory=dict, description="Test per feature; unnamed features get the automatic choice."
    )
    p_value: float = Field(default=0.05, gt=0, lt=1, description="Significance (after Benjamini-Hochberg).")
    min_effect: float = Field(default=0.1, ge=0, description="Effect-size floor for a feature to count as drifted.")
    drifted_share: float = Field(default=0.5, gt=0, le=1, description="Share of drifted features for dataset drift.")


class PerformancePolicy(SpecModel):
    """Live performance watch."""

    metric: str | None = Field(default=None, description="Metric watched; defaults to the selection metric.")
    max_drop: float = Field(default=0.05, ge=0, description="Largest drop from the evaluated value.")
    min_labels: int = Field(default=100, ge=1, description="Labelled rows needed before judging.")


class Feedback(SpecModel):
    """Labelled production rows turned into a dataset version when a retrain is wanted and no
    producer has published anything newer."""

    min_rows: int = Field(default=500, ge=10, description="Labelled production rows needed to build a dataset.")
    max_rows: int = Field(default=100_000, ge=10, description="Most recent labelled rows kept, at most.")
    since: Literal["last-version", "window"] = Field(
        default="last-version",
        description=(
            "Which rows: served since the newest dataset version arrived (last-version), or within the "
            "window that asked for the retrain (window)."
        ),
    )
    mix_with_latest: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of the built dataset's rows drawn from the newest dataset version (0: feedback only).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Feedback:
        if self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) is below min_rows ({self.min_rows})")
        return self


class Monitoring(SpecModel):
    """What the monitor watches and when it asks for a retrain."""

    window_rows: int = Field(default=1000, ge=10, le=10_000_000, description="Rows per window.")
    window_seconds: float = Field(default=300, gt=0, le=604_800, description="Longest window, in seconds.")
    drift: DriftPolicy = Field(default_factory=DriftPolicy, description="Drift tests.")
    performance: PerformancePolicy = Field(default_factory=PerformancePolicy, description="Performance watch.")
    retrain_on: list[Literal["data", "drift", "performance"]] = Field(
        default=["data", "drift", "performance"],
        description=(
            "What trains a new version: a new dataset version arriving (data), dataset-level drift, a live "
            "performance drop. Without data, new data waits for the next retrain (the first version is "
            "always trained when data first arrives)."
        ),
    )
    retrain_cooldown_seconds: float = Field(default=3600, ge=0, description="Least time between retrain requests.")
    retrain_without_new_data: bool = Field(
        default=False,
        description=(
            "Retrain on drift or performance even when there is no data, feedback or spec the serving "
            "version was not trained on (by default such a retrain is skipped: RetrainSkipped)."
        ),
    )
    feedback: Feedback | None = Field(
        default=None, description="Turn labelled production rows into a dataset version for retraining."
    )


class Alerts(SpecModel):
    """Labels every alert about this model carries."""

    team: Word = Field(default="ml", description="Owning team (routing label).")
    severity: Literal["info", "warning", "critical"] = Field(default="warning", description="Default severity.")
    labels: dict[Word, Word] = Field(default_factory=dict, description="Extra labels.")


class FeastFeatures(SpecModel):
    """Features from a Feast feature store: the spec's `features` may then name Feast features as
    `feature_view:feature`, looked up by `entity` (point-in-time for training, online for serving)."""

    entity: str = Field(
        pattern=_COLUMN,
        description="Join key: a column of the dataset, and a field of each request (e.g. customer_id).",
    )
    event_timestamp: str = Field(
        default="event_timestamp",
        pattern=_COLUMN,
        description="The dataset's column of when each row was observed: its features are taken as of then.",
    )
    on_missing: Literal["reject", "impute"] = Field(
        default="reject",
        description="An entity the online store lacks: reject answers 422 naming it; impute fills as in training.",
    )


class ModelSpec(SpecModel):
    """A model spec, as applied with `modelbus apply -f spec.yaml`."""

    api_version: Literal["modelbus/v1"] = Field(default="modelbus/v1", description="Spec format version.")
    model: str = Field(pattern=_NAME, description="Model name: lowercase letters, digits, '.', '_', '-'.")
    workspace: str = Field(
        default="default",
        pattern=_NAME,
        description="The workspace (team) that owns the model: roles are granted per workspace.",
    )
    description: str = Field(default="", max_length=2000, description="What the model is for.")
    dataset: str = Field(pattern=_NAME, description="Dataset whose arrivals train this model.")
    task: Task = Field(description="classification or regression.")
    target: str = Field(pattern=_COLUMN, description="Target column (a column name, as a feature's).")
    features: list[Feature] = Field(min_length=1, max_length=2000, description="Input columns.")
    derived: list[DerivedFeature] = Field(
        default_factory=list, max_length=200, description="Features computed from the others, in order."
    )
    contract: Contract = Field(default_factory=Contract, description="Data contract.")
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES, description="Estimators to try.")
    search: Search = Field(default_factory=Search, description="Search bounds.")
    split: Split = Field(default_factory=Split, description="Data split.")
    selection_metric: str = Field(description="Metric that picks the best candidate.")
    gates: list[Gate] = Field(default_factory=list, description="Metric gates.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Latency, sanity, fairness gates.")
    rollout: Rollout = Field(default_factory=Rollout, description="Rollout policy.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Monitoring policy.")
    alerts: Alerts = Field(default_factory=Alerts, description="Alert labels.")
    require_approval: bool = Field(default=False, description="A human must approve before any rollout.")
    feast: FeastFeatures | None = Field(
        default=None, description="Features looked up in a Feast feature store (names view:feature)."
    )

    def feast_refs(self) -> list[str]:
        """The features looked up in Feast (`feature_view:feature`), in the spec's order."""
        return [f.name for f in self.features if self.feast is not None and ":" in f.name]

    def model_inputs(self) -> list[Feature]:
        """What the estimator sees: the raw features but datetimes, then the derived ones (numeric)."""
        raw = [f for f in self.features if f.type != "datetime"]
        return raw + [Feature(name=d.name, type="numeric") for d in self.derived]

    def sha256(self) -> str:
        """Digest of the canonical JSON form: equal specs have equal digests, whatever their YAML."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec format (schemas/model-spec.json)."""
    return ModelSpec.model_json_schema(mode="validation")
