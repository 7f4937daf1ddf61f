"""What the registry's HTTP API answers, as the contract's views: the registry returns them, the
Python client (`modelbus.types`) and the console read them, so the three cannot drift apart. Each
view keeps fields it does not name (`extra="allow"`), so a newer registry's additions reach an
older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class View(BaseModel):
    """A read-only value returned by the registry (built from a row's attributes by the store)."""

    model_config = ConfigDict(frozen=True, from_attributes=True, extra="allow")


class ModelVersion(View):
    """One version of a model."""

    model: str = Field(description="Model name.")
    version: int = Field(description="Version number.")
    status: str = Field(description="Lifecycle status.")
    status_reason: str = Field(description="Why it has that status.")
    run_id: str = Field(description="Training run that produced it.")
    task: str = Field(description="classification or regression.")
    estimator: str = Field(description="scikit-learn class.")
    params: dict[str, Any] = Field(description="Hyperparameters.")
    metrics: dict[str, float] = Field(description="Validation metrics.")
    artifacts: list[dict[str, Any]] = Field(description="Artifacts with URIs and SHA-256.")
    manifest: dict[str, Any] = Field(description="Feature schema, data digest, code version, candidates, timing.")
    dataset: str = Field(description="Dataset name.")
    dataset_version: str = Field(description="Dataset version trained on.")
    code_version: str = Field(description="Trainer code version.")
    spec_revision: int = Field(description="Spec revision in force.")
    aliases: list[str] = Field(description="Aliases pointing at it.")
    tags: dict[str, str] = Field(description="Tags.")
    correlation_id: str = Field(description="Lifecycle that produced it.")
    created_at: datetime = Field(description="When it was registered.")
    updated_at: datetime = Field(description="Last status change.")


class ModelSummary(View):
    """A model with its aliases and latest state."""

    name: str = Field(description="Model name.")
    workspace: str = Field(default="default", description="The workspace that owns the model.")
    latest_version: int = Field(description="Highest version number (0: none yet).")
    aliases: dict[str, int] = Field(description="Alias to version.")
    spec_revision: int | None = Field(description="Latest applied spec revision.")
    dataset: str | None = Field(description="Dataset named by the spec.")
    task: str | None = Field(description="Task named by the spec.")
    statuses: dict[str, int] = Field(description="Number of versions per status.")
    updated_at: datetime = Field(description="Last change.")


class DatasetVersion(View):
    """A recorded version of a dataset."""

    name: str = Field(description="Dataset name.")
    version: str = Field(description="Version label.")
    uri: str = Field(description="Where it is.")
    sha256: str | None = Field(description="Digest.")
    format: str = Field(description="csv or parquet.")
    row_count: int | None = Field(description="Rows.")
    size_bytes: int | None = Field(description="Bytes.")
    columns: dict[str, str] | None = Field(description="Schema: column to dtype.")
    profile: dict[str, Any] | None = Field(description="Profile of the data (from the first training on it).")
    producer: str = Field(description="Who published it.")
    lineage: dict[str, Any] | None = Field(
        default=None, description="Production feedback (producer monitor): the windows and label batches it came from."
    )
    arrived_at: datetime = Field(description="When it arrived.")


class TrainingRun(View):
    """A training run."""

    run_id: str = Field(description="Run id.")
    model: str = Field(description="Model name.")
    status: Literal["running", "succeeded", "failed"] = Field(description="Outcome so far.")
    trigger: str | None = Field(description="data-arrived or retrain-requested.")
    dataset: str = Field(description="Dataset name.")
    dataset_version: str = Field(description="Dataset version.")
    spec_revision: int | None = Field(description="Spec revision.")
    code_version: str | None = Field(description="Trainer code version.")
    candidates: list[Any] = Field(description="Estimators tried (with scores once done).")
    training_seconds: float | None = Field(description="Fit time.")
    failure: dict[str, Any] | None = Field(description="Stage, reason and violations, if it failed.")
    started_at: datetime | None = Field(description="Start.")
    finished_at: datetime | None = Field(description="End.")


class Evaluation(View):
    """An evaluation of a version."""

    event_id: str = Field(description="ce_id of the ModelEvaluated event.")
    version: int = Field(description="Version evaluated.")
    decision: str = Field(description="approved, held-for-review or rejected.")
    passed: bool = Field(description="Every gate passed.")
    champion_version: int | None = Field(description="Champion compared with.")
    gates: list[dict[str, Any]] = Field(description="Gates with their numbers.")
    metrics: dict[str, float] = Field(description="Candidate metrics on the test split.")
    champion_metrics: dict[str, float] = Field(description="Champion metrics on the same split.")
    test_rows: int = Field(description="Rows of the test split.")
    evaluated_at: datetime = Field(description="When.")


class RolloutStep(View):
    """One rollout transition."""

    event_id: str = Field(description="ce_id of the RolloutChanged event.")
    rollout_id: str = Field(description="Rollout id.")
    candidate_version: int = Field(description="Candidate.")
    stable_version: int | None = Field(description="Stable version.")
    from_state: str = Field(description="State before.")
    to_state: str = Field(description="State after.")
    step: int = Field(description="Canary step index.")
    traffic: list[dict[str, Any]] = Field(description="Split after the transition.")
    reason: str = Field(description="Why.")
    evidence: dict[str, float] = Field(description="Numbers behind it.")
    actor: str = Field(description="deployer or an operator.")
    occurred_at: datetime = Field(description="When.")


class HistoryItem(View):
    """A drift, performance, alert, failure or command event about a model."""

    event_id: str = Field(description="ce_id of the event.")
    kind: str = Field(description="Event type.")
    version: int | None = Field(description="Version concerned.")
    summary: str = Field(description="One line.")
    payload: dict[str, Any] = Field(description="The event body.")
    occurred_at: datetime = Field(description="When.")


class AuditEntry(View):
    """One audited action."""

    id: int = Field(description="Sequence number.")
    at: datetime = Field(description="When.")
    actor: str = Field(description="Who: the token's name.")
    subject: str = Field(default="", description="The OpenID Connect token's subject (empty for a static token).")
    role: str = Field(description="Their role.")
    action: str = Field(description="What.")
    target: str = Field(description="On what (model, model@version, spec).")
    reason: str = Field(description="Why, as given.")
    outcome: Literal["ok", "refused"] = Field(description="Done or refused.")
    detail: dict[str, Any] = Field(description="Parameters and, when refused, the reason.")


class SpecRevision(View):
    """An applied spec revision."""

    model: str = Field(description="Model name.")
    revision: int = Field(description="Revision number.")
    sha256: str = Field(description="Digest of the canonical spec.")
    spec: dict[str, Any] = Field(description="The validated spec.")
    spec_yaml: str = Field(description="The YAML as applied.")
    applied_by: str = Field(description="Who applied it.")
    applied_at: datetime = Field(description="When.")


class Lineage(View):
    """A version's whole chain: data → run → version → evaluations → rollouts → drift and alerts."""

    version: ModelVersion
    dataset: DatasetVersion | None
    run: TrainingRun | None
    spec: SpecRevision | None
    evaluations: list[Evaluation]
    rollouts: list[RolloutStep]
    history: list[HistoryItem]
