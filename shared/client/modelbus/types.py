"""What the client returns: typed views of the APIs' answers. The registry's models, versions and
audit entries are the contract's own views (shared.contract.views: what the registry returns and
the console reads); the rest are declared here. Each keeps fields it does not name
(`extra="allow"`), so a newer server's additions reach the caller."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.contract import views

Model = views.ModelSummary
Version = views.ModelVersion
AuditEntry = views.AuditEntry


class View(BaseModel):
    """An API answer."""

    model_config = ConfigDict(extra="allow")


class Lineage(View):
    """A version's chain: dataset → run → version → evaluations → rollouts → drift and alerts."""

    version: Version
    dataset: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    evaluations: list[dict[str, Any]] = Field(default_factory=list)
    rollouts: list[dict[str, Any]] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)


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
