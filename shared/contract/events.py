"""Every event modelbus exchanges: frozen pydantic models, the source of truth of the contract.

`schemas/` is generated from these models (`modelbus schemas generate`). Within one
`schema_version` major, only optional fields may be added; consumers ignore fields
they do not know, and refuse a major they do not know.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from shared.contract import topics
from shared.contract.spec import ModelSpec
from shared.contract.topics import Principal

SCHEMA_VERSION = "1.0"
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
_NAME = r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$"
_SHA256 = r"^[0-9a-f]{64}$"

ModelName = Annotated[str, Field(pattern=_NAME, description="Model name: lowercase letters, digits, '.', '_', '-'.")]
Sha256 = Annotated[str, Field(pattern=_SHA256, description="SHA-256 digest, 64 lowercase hex digits.")]
MAX_VERSION = 2**31 - 1  # the registry stores a version as a 32-bit integer
Version = Annotated[int, Field(ge=1, le=MAX_VERSION, description="Model version number, monotonic per model.")]
Scalar = str | int | float | bool | None
_SCALARS = frozenset({str, int, float, bool, type(None)})
_SCALAR_LIST: TypeAdapter[list[Scalar]] = TypeAdapter(list[Scalar])


def _scalar_cells(column: list[Any]) -> list[Any]:
    """A column of scalars, checked at C speed when every cell is exactly a JSON scalar (validating
    the union cell by cell cost two thirds of decoding a PredictionsLogged); anything else, such as
    a numpy number, goes through the union's validation, which converts or names the bad cell."""
    if _SCALARS.issuperset(map(type, column)):
        return column
    try:
        return _SCALAR_LIST.validate_python(column)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][:1])
        raise ValueError(f"row {where}: a feature value must be a string, number, boolean or null") from None


# A column of feature values (as list[Scalar], and so in the JSON Schema).
ScalarColumn = Annotated[list[Any], AfterValidator(_scalar_cells), WithJsonSchema(_SCALAR_LIST.json_schema())]
Severity = Literal["info", "warning", "critical"]


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid() -> str:
    return str(uuid.uuid4())


class Record(BaseModel):
    """A frozen value inside an event."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(Record):
    """Base of every event: versioned body plus the lifecycle's correlation and causation."""

    event_type: ClassVar[str]
    topic: ClassVar[str]
    key_field: ClassVar[str] = "model"
    # The contract's producer/consumer table: the broker's ACLs are generated from it
    # (shared.contract.access), and a service's HANDLERS table must match it.
    emitted_by: ClassVar[tuple[Principal, ...]]
    consumed_by: ClassVar[tuple[Principal, ...]]

    schema_version: str = Field(
        default=SCHEMA_VERSION,
        description="Body schema version MAJOR.MINOR; a consumer refuses a major it does not know.",
    )
    correlation_id: str = Field(
        default_factory=_uuid,
        description="One lifecycle: from the data or retrain request to the rollout.",
    )
    causation_id: str | None = Field(
        default=None, description="ce_id of the event that caused this one; null for a first cause."
    )
    occurred_at: datetime = Field(default_factory=_now, description="When it happened (UTC).")

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, value: str) -> str:
        match = _VERSION.match(value)
        if not match:
            raise ValueError(f"schema_version must look like MAJOR.MINOR, got {value!r}")
        if match.group(1) != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(
                f"schema_version {value} has major {match.group(1)}; this consumer reads "
                f"major {SCHEMA_VERSION.split('.')[0]} only"
            )
        return value

    def key(self) -> str:
        """The Kafka key: the model name (the dataset name for DataArrived)."""
        return str(getattr(self, self.key_field))


# ---------------------------------------------------------------- shared records


class FeatureSchema(Record):
    """One input column of a model."""

    name: str = Field(min_length=1, description="Column name.")
    kind: Literal["numeric", "categorical", "boolean", "datetime", "text"] = Field(
        description="How the column is treated."
    )
    dtype: str = Field(description="Storage dtype as read (e.g. float64, int64, string).")
    nullable: bool = Field(default=True, description="Whether nulls are allowed.")


class ArtifactRef(Record):
    """A stored artifact and its digest, checked before every load."""

    name: Literal["model.skops", "model.onnx", "manifest.json", "test-split.parquet", "other"] | str = Field(
        description="Role of the artifact, e.g. model.skops, model.onnx, manifest.json."
    )
    uri: str = Field(description="s3://bucket/key or file:///path.")
    sha256: Sha256
    size_bytes: int = Field(ge=0, description="Size in bytes.")


class NumericProfile(Record):
    """Reference distribution of a numeric feature."""

    kind: Literal["numeric"] = Field(default="numeric", description="Discriminator.")
    count: int = Field(ge=0, description="Non-null values seen.")
    null_fraction: float = Field(ge=0, le=1, description="Share of nulls.")
    mean: float = Field(description="Mean of non-null values.")
    std: float = Field(ge=0, description="Standard deviation of non-null values.")
    min: float = Field(description="Smallest value.")
    max: float = Field(description="Largest value.")
    bin_edges: list[float] = Field(min_length=2, description="Quantile bin edges, ascending.")
    bin_fractions: list[float] = Field(
        min_length=1, description="Share of values per bin (len(bin_edges) - 1 entries)."
    )
    sample: list[float] = Field(default_factory=list, description="A seeded sample of values for exact tests (KS).")


class CategoricalProfile(Record):
    """Reference distribution of a categorical feature."""

    kind: Literal["categorical"] = Field(default="categorical", description="Discriminator.")
    count: int = Field(ge=0, description="Non-null values seen.")
    null_fraction: float = Field(ge=0, le=1, description="Share of nulls.")
    frequencies: dict[str, float] = Field(description="Share of each category among non-nulls.")


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class Calibration(Record):
    """Scores mapped to probabilities, fitted by isotonic regression on the version's held-out test
    split at training time: the basis of label-free performance estimation (CBPE). Each map is
    piecewise linear through its knots (clipped at both ends), as scikit-learn's
    IsotonicRegression(out_of_bounds="clip") predicts."""

    method: Literal["isotonic"] = Field(default="isotonic", description="How the maps were fitted.")
    rows: int = Field(ge=1, description="Test rows the maps were fitted on.")
    confidence_knots: list[float] = Field(min_length=1, description="Top-class probability, ascending.")
    confidence_correct: list[float] = Field(
        min_length=1, description="P(the predicted class is right) at each confidence knot."
    )
    positive_class: str | None = Field(
        default=None, description="Binary classifiers: the class whose probability is the score."
    )
    score_knots: list[float] = Field(default_factory=list, description="Binary: positive-class probability, ascending.")
    score_positive: list[float] = Field(
        default_factory=list, description="Binary: P(the row is of the positive class) at each score knot."
    )


class ReferenceProfile(Record):
    """What the training data looked like, per feature and for the prediction."""

    rows: int = Field(ge=0, description="Rows profiled.")
    features: dict[str, FeatureProfile] = Field(description="Profile per feature name.")
    prediction: FeatureProfile | None = Field(
        default=None, description="Distribution of the model's prediction on the validation split."
    )
    calibration: Calibration | None = Field(
        default=None, description="Classifiers: score calibration on the test split, for estimated performance."
    )


class GateResult(Record):
    """One evaluation gate with its numbers."""

    name: str = Field(description="Gate name, e.g. min_accuracy, not_worse_than_champion.")
    metric: str = Field(description="Metric the gate reads.")
    value: float | None = Field(description="Measured value (null when it could not be measured).")
    threshold: float = Field(description="Threshold the value is compared with.")
    comparator: Literal[">=", "<=", ">", "<", "within"] = Field(description="How they compare.")
    passed: bool = Field(description="Whether the gate passed.")
    detail: str = Field(default="", description="Readable explanation.")
    measurements: list[float] = Field(
        default_factory=list,
        description="Every measurement of the value, in order (a latency gate that fails is measured once "
        "more, and the second counts).",
    )
    champion_value: float | None = Field(
        default=None, description="The champion's value, measured in the same run (latency gates)."
    )
    load: float | None = Field(
        default=None,
        description="The machine's 1-minute load average per core while the value was measured (latency gates).",
    )


class CandidateResult(Record):
    """One estimator tried during training."""

    estimator: str = Field(description="Estimator class path, from the allowlist.")
    params: dict[str, Scalar] = Field(description="Hyperparameters of its best fit.")
    score: float = Field(description="Value of the spec's selection metric on validation.")
    cv_score: float | None = Field(
        default=None, description="Mean cross-validated selection metric of its best parameters (searched only)."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="Every validation metric of its best fit.")
    checks: list[GateResult] = Field(
        default_factory=list,
        description="The spec's gates it was checked against before choosing (sanity on validation, latency of "
        "its served form).",
    )
    refused: str | None = Field(
        default=None, description="Why it could not be chosen (a gate it fails); null: it could."
    )


class ContractViolation(Record):
    """One rule of a data contract that the data broke."""

    column: str | None = Field(description="Column concerned; null for table-level rules.")
    rule: str = Field(description="The rule, e.g. required, dtype, max_null_fraction, range, domain.")
    expected: str = Field(description="What the contract asks for.")
    observed: str = Field(description="What the data has.")


class TrafficShare(Record):
    """Share of live traffic a version receives."""

    version: Version
    percent: float = Field(ge=0, le=100, description="Percent of requests, 0-100.")
    role: Literal["stable", "canary", "shadow"] = Field(description="Its role in the rollout.")


class Prediction(Record):
    """One served prediction."""

    request_id: str = Field(min_length=1, description="Id returned to the caller; labels join on it.")
    model_version: Version
    role: Literal["stable", "canary", "shadow"] = Field(description="Which side answered.")
    features: dict[str, Scalar] = Field(description="The request's feature values.")
    prediction: str | int | float = Field(description="Predicted class or value.")
    probabilities: dict[str, float] | None = Field(
        default=None, description="Class probabilities, classification only."
    )
    latency_ms: float = Field(ge=0, description="Model latency in milliseconds.")
    served_at: datetime = Field(description="When it was served (UTC).")
    sticky_key: str | None = Field(default=None, description="Value of the rollout's sticky key.")


class Label(Record):
    """Ground truth for one earlier prediction."""

    request_id: str = Field(min_length=1, description="request_id of the prediction.")
    label: str | int | float = Field(description="True class or value.")
    observed_at: datetime = Field(description="When the truth was observed (UTC).")


class MetricComparison(Record):
    """A metric of the canary against the stable version."""

    metric: str = Field(description="Metric name, e.g. error_rate, accuracy, latency_p99_ms.")
    candidate: float | None = Field(description="Canary value.")
    stable: float | None = Field(description="Stable value.")
    threshold: float = Field(description="Allowed difference or ratio.")
    passed: bool = Field(description="Whether the canary is within the threshold.")
    test: str | None = Field(
        default=None, description="How it was judged, e.g. paired-t, welch-t, cbpe, ratio, broken-check."
    )
    low: float | None = Field(default=None, description="Lower end of the confidence interval of the difference.")
    high: float | None = Field(default=None, description="Upper end of the confidence interval of the difference.")
    confidence: float | None = Field(default=None, description="Confidence level of the interval, e.g. 0.95.")
    candidate_samples: int | None = Field(default=None, ge=0, description="Candidate rows behind it.")
    stable_samples: int | None = Field(default=None, ge=0, description="Stable rows behind it.")
    outcome: Literal["pass", "fail", "undecided", "reported"] | None = Field(
        default=None,
        description=(
            "pass/fail: within or beyond the threshold; undecided: the interval is too wide to tell (hold); "
            "reported: measured, but no reason for the verdict."
        ),
    )


class FeatureDrift(Record):
    """A drift test on one feature (or on the prediction)."""

    feature: str = Field(description="Feature name, or __prediction__.")
    test: Literal["ks", "chi2", "psi", "wasserstein", "jensenshannon"] = Field(description="Statistical test used.")
    statistic: float = Field(description="Test statistic.")
    p_value: float | None = Field(default=None, description="p-value, for hypothesis tests.")
    score: float | None = Field(default=None, description="Distance or effect size, for distances.")
    threshold: float = Field(description="Threshold applied (p-value or score).")
    drifted: bool = Field(description="Verdict after multiple-testing and effect-size checks.")


# ---------------------------------------------------------------- the events


class FeedbackLineage(Record):
    """Where a dataset built from production feedback came from."""

    model: ModelName = Field(description="Model whose served rows these are.")
    versions: list[Version] = Field(description="Versions that answered them.")
    windows: list[str] = Field(description="Monitor windows the rows were served in.")
    label_batches: list[str] = Field(description="ce_id of each LabelsArrived that labelled them.")
    feedback_rows: int = Field(ge=0, description="Labelled production rows.")
    mixed_rows: int = Field(default=0, ge=0, description="Rows drawn from the base dataset version.")
    base_version: str | None = Field(default=None, description="The dataset version mixed in, if any.")
    served_from: datetime = Field(description="First serving time of the rows (UTC).")
    served_to: datetime = Field(description="Last serving time of the rows (UTC).")
    cause_event_id: str | None = Field(default=None, description="ce_id of the drift or performance event behind it.")


class DataArrived(Event):
    """A producer published a new version of a dataset."""

    event_type: ClassVar[str] = "DataArrived"
    topic: ClassVar[str] = topics.DATA_ARRIVED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("producer", "registry", "monitor")
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "trainer", "monitor")
    key_field: ClassVar[str] = "dataset"

    dataset: ModelName = Field(description="Dataset name.")
    version: str = Field(min_length=1, max_length=128, description="Producer's version label.")
    uri: str = Field(min_length=1, description="Where the data is: s3://… or file://…")
    sha256: Sha256 | None = Field(default=None, description="Digest of the file; checked on load.")
    format: Literal["csv", "parquet"] = Field(default="csv", description="File format.")
    row_count: int | None = Field(default=None, ge=0, description="Rows, if the producer knows.")
    size_bytes: int | None = Field(default=None, ge=0, description="Bytes, if the producer knows.")
    columns: dict[str, str] | None = Field(
        default=None, description="Column name to dtype, if the producer declares them."
    )
    producer: str = Field(default="unknown", description="Who published it.")
    lineage: FeedbackLineage | None = Field(
        default=None, description="Producer monitor: the production windows and label batches it was built from."
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("s3://", "file://")):
            raise ValueError("uri must start with s3:// or file://")
        return value


class ModelSpecApplied(Event):
    """A model spec revision was applied; the latest per model lives in a compacted topic."""

    event_type: ClassVar[str] = "ModelSpecApplied"
    topic: ClassVar[str] = topics.MODEL_SPEC_APPLIED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("registry",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("trainer", "evaluator", "deployer", "monitor", "alerter")

    model: ModelName
    revision: int = Field(ge=1, description="Revision number of the spec, monotonic per model.")
    spec: ModelSpec = Field(description="The validated spec (schemas/model-spec.json).")
    spec_yaml: str = Field(description="The YAML as applied.")
    spec_sha256: Sha256 = Field(description="Digest of the canonical JSON spec.")
    applied_by: str = Field(description="Who applied it.")

    @field_validator("spec", mode="before")
    @classmethod
    def _lenient_spec(cls, value: Any) -> Any:
        # Keys added by a newer spec format are dropped, not refused (compatibility within a major).
        return ModelSpec.model_validate(value, context={"lenient": True}) if isinstance(value, dict) else value


class TrainingStarted(Event):
    """A training run began."""

    event_type: ClassVar[str] = "TrainingStarted"
    topic: ClassVar[str] = topics.TRAINING_STARTED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("trainer",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "monitor")

    model: ModelName
    run_id: str = Field(description="Training run id.")
    trigger: Literal["data-arrived", "retrain-requested", "feedback"] = Field(description="What started it.")
    dataset: ModelName = Field(description="Dataset name.")
    dataset_version: str = Field(description="Dataset version trained on.")
    data_sha256: Sha256 | None = Field(default=None, description="Digest of the training data.")
    spec_revision: int = Field(ge=1, description="Spec revision in force.")
    candidates: list[str] = Field(min_length=1, description="Estimators to be tried.")
    code_version: str = Field(description="Version of the trainer's code.")


class FeatureStoreLineage(Record):
    """Where a run's feature-store features came from (a spec's `feast` section)."""

    store: Literal["feast"] = Field(default="feast", description="The feature store.")
    entity: str = Field(description="Join key column.")
    event_timestamp: str = Field(description="The dataset's column of when each row was observed.")
    on_missing: Literal["reject", "impute"] = Field(description="Serving's policy for an entity the store lacks.")
    features: list[str] = Field(min_length=1, description="The features looked up, as feature_view:feature.")
    views: list[str] = Field(min_length=1, description="The feature views they belong to.")
    registry_sha256: Sha256 = Field(description="Digest of the feature store's registry when the frame was built.")
    sources: dict[str, Sha256] = Field(
        description="Per view, the digest of its offline source: its files' bytes, else its definition."
    )


class ModelTrained(Event):
    """A training run produced a model, its artifacts and its reference profile."""

    event_type: ClassVar[str] = "ModelTrained"
    topic: ClassVar[str] = topics.MODEL_TRAINED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("trainer", "registry")
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "monitor", "alerter")

    model: ModelName
    run_id: str = Field(description="Training run id.")
    task: Literal["classification", "regression"] = Field(description="Learning task.")
    target: str = Field(description="Target column.")
    dataset: ModelName = Field(description="Dataset name.")
    dataset_version: str = Field(description="Dataset version trained on.")
    data_sha256: Sha256 = Field(description="Digest of the training data.")
    spec_revision: int = Field(ge=1, description="Spec revision in force.")
    estimator: str = Field(description="Winning scikit-learn class path.")
    params: dict[str, Scalar] = Field(description="Hyperparameters of the winner.")
    metrics: dict[str, float] = Field(description="Validation metrics of the winner.")
    candidates: list[CandidateResult] = Field(description="Every estimator tried, with its score.")
    artifacts: list[ArtifactRef] = Field(min_length=1, description="Model, manifest, test split.")
    feature_schema: list[FeatureSchema] = Field(min_length=1, description="Input columns.")
    reference_profile: ReferenceProfile = Field(description="Training data profile for drift.")
    code_version: str = Field(description="Version of the trainer's code.")
    training_seconds: float = Field(ge=0, description="Wall time of the fit.")
    trigger: Literal["data-arrived", "retrain-requested", "feedback", "imported"] | None = Field(
        default=None, description="What started the run; feedback: trained on labelled production rows."
    )
    features_from: FeatureStoreLineage | None = Field(
        default=None, description="The feature store the training frame's looked-up features came from."
    )


class TrainingFailed(Event):
    """A training run ended without a model; the cause says why."""

    event_type: ClassVar[str] = "TrainingFailed"
    topic: ClassVar[str] = topics.TRAINING_FAILED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("trainer",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "alerter")

    model: ModelName
    run_id: str = Field(description="Training run id.")
    dataset: ModelName = Field(description="Dataset name.")
    dataset_version: str = Field(description="Dataset version.")
    stage: Literal["load", "validate", "fit", "select", "export", "upload"] = Field(
        description="Stage that failed (select: no candidate can pass the spec's gates)."
    )
    reason: str = Field(description="Readable cause.")
    violations: list[ContractViolation] = Field(
        default_factory=list, description="Every data-contract rule broken (stage validate)."
    )
    attempts: int = Field(default=1, ge=1, description="Attempts made before giving up.")


class ModelRegistered(Event):
    """The registry recorded a new model version."""

    event_type: ClassVar[str] = "ModelRegistered"
    topic: ClassVar[str] = topics.MODEL_REGISTERED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("registry",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "trainer", "evaluator", "deployer", "monitor")

    model: ModelName
    version: Version
    run_id: str = Field(description="Training run that produced it.")
    dataset_version: str = Field(description="Dataset version it was trained on.")
    task: Literal["classification", "regression"] = Field(description="Learning task.")
    artifacts: list[ArtifactRef] = Field(min_length=1, description="Its artifacts with digests.")
    metrics: dict[str, float] = Field(description="Validation metrics.")
    champion_version: int | None = Field(default=None, description="Champion when registered.")


class ModelEvaluated(Event):
    """A version was evaluated on held-out data against the champion, gate by gate."""

    event_type: ClassVar[str] = "ModelEvaluated"
    topic: ClassVar[str] = topics.MODEL_EVALUATED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("evaluator",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "deployer", "alerter")

    model: ModelName
    version: Version
    champion_version: int | None = Field(description="Version compared against; null if none.")
    passed: bool = Field(description="Whether every gate passed.")
    decision: Literal["approved", "held-for-review", "rejected"] = Field(description="What happens next.")
    gates: list[GateResult] = Field(description="Every gate with its numbers.")
    metrics: dict[str, float] = Field(description="Candidate metrics on the test split.")
    champion_metrics: dict[str, float] = Field(default_factory=dict, description="Champion metrics on the same split.")
    test_rows: int = Field(ge=0, description="Rows of the test split.")
    evaluation_seconds: float | None = Field(
        default=None, ge=0, description="Time the evaluation took: loading, scoring and gates."
    )


class RolloutCommanded(Event):
    """An operator commands a rollout (through the API or CLI)."""

    event_type: ClassVar[str] = "RolloutCommanded"
    topic: ClassVar[str] = topics.ROLLOUT_COMMANDED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("registry",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "deployer")

    model: ModelName
    command: Literal["approve", "start", "promote", "pause", "resume", "rollback", "set-weights"] = Field(
        description="What to do: approve a held version, start a rollout of a version, or steer the running one."
    )
    version: int | None = Field(default=None, ge=1, description="Version concerned.")
    traffic: list[TrafficShare] | None = Field(default=None, description="Target split, for set-weights.")
    actor: str = Field(min_length=1, description="Operator who commanded it.")
    reason: str = Field(default="", description="Why.")
    audit_id: int | None = Field(
        default=None,
        ge=1,
        description="The registry's audit entry of the command (GET /v1/audit); the deployer refuses a command"
        " without one that matches.",
    )


class RolloutChanged(Event):
    """A rollout moved from one state to another; every transition is one event."""

    event_type: ClassVar[str] = "RolloutChanged"
    topic: ClassVar[str] = topics.ROLLOUT_CHANGED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("deployer",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "serving", "monitor", "alerter")

    model: ModelName
    rollout_id: str = Field(description="Rollout id.")
    candidate_version: Version
    stable_version: int | None = Field(description="Version serving before the rollout.")
    from_state: Literal["none", "pending", "shadow", "canary", "paused"] | str = Field(description="State before.")
    to_state: Literal["pending", "shadow", "canary", "paused", "promoted", "rolled-back", "superseded"] = Field(
        description="State after."
    )
    step: int = Field(ge=0, description="Index of the canary step.")
    traffic: list[TrafficShare] = Field(description="Traffic split after the transition.")
    reason: str = Field(description="Why it moved.")
    evidence: dict[str, float] = Field(default_factory=dict, description="Numbers behind it.")
    actor: str = Field(default="deployer", description="deployer, or the operator.")


class PredictionsLogged(Event):
    """Serving logged a batch of predictions, column by column: row i of every list is one answer.

    Columns, not a list of records: a consumer reads a batch of 500 answers with one array per
    field (measured: 2.0 µs per answer to validate, against 5.2 µs as records, in a third of the
    bytes). `records()` gives the rows as `Prediction`s; `from_records` builds the event from them.
    """

    event_type: ClassVar[str] = "PredictionsLogged"
    topic: ClassVar[str] = topics.PREDICTIONS_LOGGED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("serving",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("monitor",)

    model: ModelName
    batch_id: str = Field(description="Batch id.")
    request_id: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="Id returned to each caller; labels join on it. Its length is the batch's rows."
    )
    model_version: list[Version] = Field(description="Version that answered, per row.")
    role: list[Literal["stable", "canary", "shadow"]] = Field(description="Which side answered, per row.")
    features: dict[str, ScalarColumn] = Field(description="Each feature's values, one per row (null: absent).")
    prediction: list[str | int | float] = Field(description="Predicted class or value, per row.")
    probabilities: dict[str, list[float | None]] | None = Field(
        default=None, description="Each class's probability, one per row (classification only)."
    )
    latency_ms: list[Annotated[float, Field(ge=0)]] = Field(description="Model latency in milliseconds, per row.")
    served_at: list[datetime] = Field(description="When each row was served (UTC).")
    sticky_key: list[str | None] | None = Field(default=None, description="Value of the rollout's sticky key, per row.")

    @field_validator(
        "model_version", "role", "features", "prediction", "probabilities", "latency_ms", "served_at", "sticky_key"
    )
    @classmethod
    def _one_value_per_row(cls, values: Any, info: ValidationInfo) -> Any:
        # A field validator, not a model one: the error then names the column that is off.
        if values is None or "request_id" not in info.data:
            return values
        rows = len(info.data["request_id"])
        columns = {f"{info.field_name}.{k}": v for k, v in values.items()} if isinstance(values, dict) else {}
        uneven = [
            f"{name} has {len(column)}"
            for name, column in (columns or {str(info.field_name): values}).items()
            if column is not None and len(column) != rows
        ]
        if uneven:
            raise ValueError(
                f"every column needs one value per request_id ({rows}): {'; '.join(uneven)}"
                " (unless field 'request_id' is the one that is off)"
            )
        return values

    @property
    def rows(self) -> int:
        """How many predictions the batch holds."""
        return len(self.request_id)

    def records(self) -> list[Prediction]:
        """The batch as one Prediction per row."""
        found = []
        for i in range(self.rows):
            probabilities = {k: v[i] for k, v in (self.probabilities or {}).items() if v[i] is not None}
            found.append(
                Prediction(
                    request_id=self.request_id[i],
                    model_version=self.model_version[i],
                    role=self.role[i],
                    features={name: values[i] for name, values in self.features.items()},
                    prediction=self.prediction[i],
                    probabilities=probabilities or None,
                    latency_ms=self.latency_ms[i],
                    served_at=self.served_at[i],
                    sticky_key=self.sticky_key[i] if self.sticky_key else None,
                )
            )
        return found

    @classmethod
    def from_records(cls, model: str, batch_id: str, predictions: Sequence[Prediction]) -> PredictionsLogged:
        """The batch of these predictions, as columns (a feature or class a row lacks is null there)."""
        features = list(dict.fromkeys(name for p in predictions for name in p.features))
        classes = sorted({name for p in predictions for name in (p.probabilities or {})})
        keys = [p.sticky_key for p in predictions]
        return cls(
            model=model,
            batch_id=batch_id,
            request_id=[p.request_id for p in predictions],
            model_version=[p.model_version for p in predictions],
            role=[p.role for p in predictions],
            features={name: [p.features.get(name) for p in predictions] for name in features},
            prediction=[p.prediction for p in predictions],
            probabilities={c: [(p.probabilities or {}).get(c) for p in predictions] for c in classes} or None,
            latency_ms=[p.latency_ms for p in predictions],
            served_at=[p.served_at for p in predictions],
            sticky_key=keys if any(k is not None for k in keys) else None,
        )


class LabelsArrived(Event):
    """Ground truth for earlier predictions."""

    event_type: ClassVar[str] = "LabelsArrived"
    topic: ClassVar[str] = topics.LABELS_ARRIVED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("producer", "registry")
    consumed_by: ClassVar[tuple[Principal, ...]] = ("monitor",)

    model: ModelName
    labels: list[Label] = Field(min_length=1, description="The labels.")


class CanaryAnalyzed(Event):
    """The monitor compared the canary with the stable version over a window."""

    event_type: ClassVar[str] = "CanaryAnalyzed"
    topic: ClassVar[str] = topics.CANARY_ANALYZED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("monitor",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("deployer", "alerter")

    model: ModelName
    rollout_id: str = Field(description="Rollout analysed.")
    candidate_version: Version
    stable_version: int | None = Field(description="Stable version.")
    verdict: Literal["advance", "hold", "rollback"] = Field(description="What the deployer should do.")
    comparisons: list[MetricComparison] = Field(description="Metric by metric.")
    candidate_samples: int = Field(ge=0, description="Canary requests in the window.")
    stable_samples: int = Field(ge=0, description="Stable requests in the window.")
    window_start: datetime = Field(description="Window start (UTC).")
    window_end: datetime = Field(description="Window end (UTC).")
    reason: str = Field(description="Readable summary.")


class DriftDetected(Event):
    """A window of live data drifted from the training reference."""

    event_type: ClassVar[str] = "DriftDetected"
    topic: ClassVar[str] = topics.DRIFT_DETECTED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("monitor",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "alerter")

    model: ModelName
    version: Version
    window_id: str = Field(description="Window id.")
    window_start: datetime = Field(description="Window start (UTC).")
    window_end: datetime = Field(description="Window end (UTC).")
    rows: int = Field(ge=1, description="Rows in the window.")
    features: list[FeatureDrift] = Field(description="Every feature tested.")
    prediction: FeatureDrift | None = Field(default=None, description="Drift of the prediction.")
    drifted_share: float = Field(ge=0, le=1, description="Share of features that drifted.")
    dataset_drift: bool = Field(description="Whether the share crossed the policy's threshold.")
    severity: Severity = Field(description="Severity from the monitoring policy.")
    estimated: dict[str, float] = Field(
        default_factory=dict, description="Label-free performance estimates of the window (CBPE), e.g. accuracy."
    )


class PerformanceDegraded(Event):
    """A live metric of a version fell past its threshold."""

    event_type: ClassVar[str] = "PerformanceDegraded"
    topic: ClassVar[str] = topics.PERFORMANCE_DEGRADED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("monitor",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "alerter")

    model: ModelName
    version: Version
    window_id: str = Field(description="Window id.")
    metric: str = Field(description="Metric name.")
    value: float = Field(description="Live value.")
    baseline: float = Field(description="Value at evaluation time.")
    threshold: float = Field(description="Threshold crossed.")
    labelled_rows: int = Field(ge=0, description="Labelled rows behind the value (0 when estimated).")
    severity: Severity = Field(description="Severity from the monitoring policy.")
    estimated: bool = Field(
        default=False, description="True when the value is a label-free estimate (CBPE), not measured on labels."
    )
    rows: int | None = Field(default=None, ge=1, description="Rows behind an estimate.")


class RetrainRequested(Event):
    """A model should be trained again (policy or operator)."""

    event_type: ClassVar[str] = "RetrainRequested"
    topic: ClassVar[str] = topics.RETRAIN_REQUESTED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("monitor", "registry")
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "trainer")

    model: ModelName
    reason: Literal["drift", "performance", "operator", "schedule"] = Field(description="Why.")
    dataset_version: str | None = Field(default=None, description="Dataset version to use; null means the latest.")
    requested_by: str = Field(description="Service or operator asking.")
    cause_event_id: str | None = Field(default=None, description="ce_id of the drift/performance event behind it.")


class RetrainSkipped(Event):
    """A retrain was asked for (on drift or performance) but nothing was trained: there is nothing
    the serving version was not already trained on, so a new fit could not help."""

    event_type: ClassVar[str] = "RetrainSkipped"
    topic: ClassVar[str] = topics.RETRAIN_SKIPPED
    emitted_by: ClassVar[tuple[Principal, ...]] = ("monitor",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "alerter")

    model: ModelName
    version: Version = Field(description="The version the drift or performance event is about.")
    asked_for: Literal["drift", "performance"] = Field(description="What asked for the retrain.")
    reason: str = Field(description="Readable, e.g. drift persists; no data newer than v1's dataset.")
    dataset: ModelName = Field(description="The spec's dataset.")
    trained_on: str | None = Field(description="Dataset version the version was trained on.")
    latest_dataset_version: str | None = Field(description="Newest dataset version known.")
    spec_revision: int | None = Field(default=None, ge=1, description="Spec revision in force.")
    feedback_rows: int = Field(default=0, ge=0, description="Labelled production rows available as feedback.")
    feedback_needed: int | None = Field(default=None, ge=1, description="Rows the feedback policy needs, if set.")
    cause_event_id: str | None = Field(default=None, description="ce_id of the drift/performance event.")


class AlertRaised(Event):
    """An alert fired (or was updated); published on the alerts topic."""

    event_type: ClassVar[str] = "AlertRaised"
    topic: ClassVar[str] = topics.ALERTS
    emitted_by: ClassVar[tuple[Principal, ...]] = ("alerter",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry",)

    model: str = Field(description="Model concerned, or '-' for platform alerts.")
    fingerprint: str = Field(description="Identity of the alert: hash of its label set.")
    labels: dict[str, str] = Field(description="Identifying labels (model, version, kind, severity, team).")
    annotations: dict[str, str] = Field(description="Summary, evidence, links.")
    severity: Severity = Field(description="Severity.")
    starts_at: datetime = Field(description="When it started firing (UTC).")
    source_event_type: str = Field(description="Event type that raised it.")
    source_event_id: str = Field(description="ce_id of that event.")


class AlertResolved(Event):
    """A firing alert's condition cleared; published on the alerts topic."""

    event_type: ClassVar[str] = "AlertResolved"
    topic: ClassVar[str] = topics.ALERTS
    emitted_by: ClassVar[tuple[Principal, ...]] = ("alerter",)
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry",)

    model: str = Field(description="Model concerned, or '-' for platform alerts.")
    fingerprint: str = Field(description="Identity of the alert.")
    labels: dict[str, str] = Field(description="Its labels.")
    starts_at: datetime = Field(description="When it started firing (UTC).")
    ends_at: datetime = Field(description="When it cleared (UTC).")
    reason: str = Field(description="Why it resolved.")


class DeadLettered(Event):
    """A message a consumer could not handle, kept whole with the reason."""

    event_type: ClassVar[str] = "DeadLettered"
    topic: ClassVar[str] = topics.DEAD_LETTER
    emitted_by: ClassVar[tuple[Principal, ...]] = topics.SERVICES  # every consumer, serving's scorer too
    consumed_by: ClassVar[tuple[Principal, ...]] = ("registry", "alerter")
    key_field: ClassVar[str] = "consumer"

    consumer: str = Field(description="Consumer (group) that refused it.")
    reason: str = Field(description="Readable reason, naming the bad field where there is one.")
    error_type: Literal["parse", "validation", "unknown-type", "handler", "transient-exhausted", "refused"] = Field(
        description="Kind of failure; refused: the event claims what its sender may not (a check of trust)."
    )
    attempts: int = Field(ge=1, description="Handler attempts made.")
    original_topic: str = Field(description="Topic it was read from.")
    original_partition: int = Field(ge=0, description="Partition it was read from.")
    original_offset: int = Field(ge=0, description="Offset it was read from.")
    original_key_b64: str | None = Field(description="Original key bytes, base64.")
    original_value_b64: str = Field(description="Original value bytes, base64.")
    original_headers: list[tuple[str, str]] = Field(
        description="Original headers as (name, base64 value) pairs, in order."
    )
    original_event_id: str | None = Field(default=None, description="ce_id, if it had one.")
    original_size_bytes: int | None = Field(
        default=None, ge=0, description="Size of the original value; more than kept when it was truncated."
    )
    original_truncated: bool = Field(
        default=False, description="Only the start of the original value is kept (it was too large to carry)."
    )


EVENT_TYPES: tuple[type[Event], ...] = (
    DataArrived,
    ModelSpecApplied,
    TrainingStarted,
    ModelTrained,
    TrainingFailed,
    ModelRegistered,
    ModelEvaluated,
    RolloutCommanded,
    RolloutChanged,
    PredictionsLogged,
    LabelsArrived,
    CanaryAnalyzed,
    DriftDetected,
    PerformanceDegraded,
    RetrainRequested,
    RetrainSkipped,
    AlertRaised,
    AlertResolved,
    DeadLettered,
)
BY_TYPE: dict[str, type[Event]] = {cls.event_type: cls for cls in EVENT_TYPES}
