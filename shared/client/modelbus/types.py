"""What the client returns: typed views of the APIs' answers. Each keeps fields it does not name
(`extra="allow"`), so a newer server's additions reach the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class View(BaseModel):
    """An API answer."""

    model_config = ConfigDict(extra="allow")


class Model(View):
    """A model with its aliases and latest state."""

    name: str
    latest_version: int
    aliases: dict[str, int] = Field(default_factory=dict)
    spec_revision: int | None = None
    dataset: str | None = None
    task: str | None = None
    statuses: dict[str, int] = Field(default_factory=dict)
    updated_at: datetime | None = None


class Version(View):
    """One version of a model."""

    model: str
    version: int
    status: str
    status_reason: str = ""
    run_id: str = ""
    task: str = ""
    estimator: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    artifacts: list[dict[str, Any]] = Field(default_factory=list)
    manifest: dict[str, Any] = Field(default_factory=dict)
    dataset: str = ""
    dataset_version: str = ""
    aliases: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None


class Lineage(View):
    """A version's chain: dataset → run → version → evaluations → rollouts → drift and alerts."""

    version: Version
    dataset: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    evaluations: list[dict[str, Any]] = Field(default_factory=list)
    rollouts: list[dict[str, Any]] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)


class AuditEntry(View):
    """One audited action."""

    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    reason: str = ""
    outcome: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Done(View):
    """An operator action done (an approval, a rollout command, a retrain)."""

    action: str
    target: str
    event_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Published(View):
    """An event accepted for the bus."""

    event_type: str
    event_id: str
    key: str


class Prediction(View):
    """One row's answer."""

    request_id: str
    version: int
    role: str
    prediction: Any
    probabilities: dict[str, float] | None = None


class Alert(View):
    """An alert."""

    fingerprint: str
    status: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Silence(View):
    """A silence."""

    id: str
    matchers: list[dict[str, Any]] = Field(default_factory=list)
