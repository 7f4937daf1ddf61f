"""`Client` and `AsyncClient`: the registry, serving and alerter APIs from Python.

    from modelbus import Client
    with Client("http://127.0.0.1:8080", token="...") as mb:
        mb.versions("churn")

Unset arguments come from the environment, as the CLI reads them (`ENVIRONMENT`): MODELBUS_API_URL,
MODELBUS_SERVING_URL, MODELBUS_ALERTER_URL, MODELBUS_API_TOKEN and MODELBUS_SERVING_TOKEN.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx

from modelbus import requests as plans
from modelbus.requests import Plan, Protocol
from modelbus.types import Alert, AuditEntry, Done, Lineage, Model, Prediction, Published, Silence, Version
from shared.contract.events import DataArrived, LabelsArrived

T = TypeVar("T")
VARIABLES = {"registry": "MODELBUS_API_URL", "serving": "MODELBUS_SERVING_URL", "alerter": "MODELBUS_ALERTER_URL"}
DEFAULTS = {"registry": "http://127.0.0.1:8080", "serving": "http://127.0.0.1:8081", "alerter": "http://127.0.0.1:8082"}
ENVIRONMENT = {  # variable: (default, meaning), what an unset argument is read from
    "MODELBUS_API_URL": (DEFAULTS["registry"], "The registry's API (`url`)."),
    "MODELBUS_SERVING_URL": (DEFAULTS["serving"], "Serving's API (`serving_url`)."),
    "MODELBUS_ALERTER_URL": (DEFAULTS["alerter"], "The alerter's API (`alerter_url`)."),
    "MODELBUS_API_TOKEN": ("", "Bearer token sent to the registry and the alerter (`token`)."),
    "MODELBUS_SERVING_TOKEN": ("", "Bearer token sent to serving when it requires one (`serving_token`)."),
}


class ApiError(Exception):
    """An API refused a request, or could not be reached. `status` is the HTTP status (None when
    unreachable); `errors` holds the server's field errors (each with its location and message)."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


def refusal(service: str, response: httpx.Response) -> ApiError:
    """An ApiError from a refusal, whatever the protocol's error shape."""
    try:
        body: Any = response.json()
    except ValueError:
        body = {"detail": response.text.strip()}
    errors: list[Any] = []
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body.get("message", body)))
        errors = body.get("errors") or []
    else:
        detail = body
    if isinstance(detail, list):  # FastAPI's validation errors, or serving's list of bad fields
        errors = errors or detail
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    hint = " (set MODELBUS_API_TOKEN)" if response.status_code == 401 else ""
    return ApiError(
        f"{service} answered {response.status_code}: {detail}{hint}", status=response.status_code, errors=errors
    )


class _Base:
    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        serving_url: str | None = None,
        alerter_url: str | None = None,
        serving_token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        given = {"registry": url, "serving": serving_url, "alerter": alerter_url}
        self.urls = {s: (given[s] or os.environ.get(VARIABLES[s]) or DEFAULTS[s]).rstrip("/") for s in DEFAULTS}
        self.token = token if token is not None else os.environ.get("MODELBUS_API_TOKEN", "")
        self.serving_token = (
            serving_token if serving_token is not None else os.environ.get("MODELBUS_SERVING_TOKEN", "")
        )
        self.timeout = timeout

    def _headers(self, plan: Plan[Any]) -> dict[str, str]:
        token = self.serving_token if plan.service == "serving" else self.token
        return {**plan.headers, **({"authorization": f"Bearer {token}"} if token else {})}

    def _url(self, plan: Plan[Any]) -> str:
        return self.urls[plan.service] + plan.path

    def _unreachable(self, plan: Plan[Any], exc: Exception) -> ApiError:
        return ApiError(
            f"the {plan.service} API at {self.urls[plan.service]} is unreachable ({type(exc).__name__});"
            f" is it running, and {VARIABLES[plan.service]} right?"
        )

    @staticmethod
    def _params(plan: Plan[Any]) -> dict[str, Any]:
        return {k: v for k, v in plan.params.items() if v is not None}


class Client(_Base):
    """The modelbus APIs, synchronously (see `AsyncClient` for the same calls awaited)."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self.http = httpx.Client(timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def run(self, plan: Plan[T]) -> T:
        """Run one planned call; raises ApiError with the server's reason."""
        try:
            response = self.http.request(
                plan.method, self._url(plan), params=self._params(plan), json=plan.body, headers=self._headers(plan)
            )
        except httpx.TransportError as exc:
            raise self._unreachable(plan, exc) from None
        if response.status_code >= 400:
            raise refusal(plan.service, response)
        return plan.read(response.json() if response.content else None)

    def request(self, service: str, method: str, path: str, **options: Any) -> httpx.Response:
        """Any other call (the CLI's imports and exports use it); raises ApiError like the rest."""
        plan: Plan[Any] = Plan(service, method, path, plans._raw)  # type: ignore[arg-type]
        try:
            response = self.http.request(method, self._url(plan), headers=self._headers(plan), **options)
        except httpx.TransportError as exc:
            raise self._unreachable(plan, exc) from None
        if response.status_code >= 400:
            raise refusal(service, response)
        return response

    def models(self, contains: str | None = None) -> list[Model]:
        """Every model (or those whose name contains `contains`)."""
        return self.run(plans.models(contains))

    def model(self, name: str) -> Model:
        """One model."""
        return self.run(plans.model(name))

    def versions(
        self, name: str, *, status: str | None = None, metric: str | None = None, limit: int = 100
    ) -> list[Version]:
        """A model's versions, newest first (`metric="roc_auc>=0.8"` filters)."""
        return self.run(plans.versions(name, status=status, metric=metric, limit=limit))

    def version(self, ref: str) -> Version:
        """A version: `churn@3`, `churn@champion`, `churn` (the latest)."""
        return self.run(plans.version(ref))

    def lineage(self, ref: str) -> Lineage:
        """A version's lineage."""
        return self.run(plans.lineage(ref))

    def audit(
        self, *, target: str | None = None, actor: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The audit log, newest first."""
        return self.run(plans.audit(target=target, actor=actor, action=action, limit=limit))

    def approve(self, ref: str, reason: str = "") -> Done:
        """Approve a version (operator)."""
        return self.run(plans.decide(ref, "approve", reason))

    def reject(self, ref: str, reason: str = "") -> Done:
        """Reject a version (operator)."""
        return self.run(plans.decide(ref, "reject", reason))

    def rollout(self, name: str, command: str, *, version: int | None = None, reason: str = "") -> Done:
        """A rollout command: start (with `version`), pause, resume, promote, rollback (operator)."""
        return self.run(plans.rollout(name, command, version=version, reason=reason))

    def retrain(self, name: str, *, dataset_version: str | None = None, reason: str = "") -> Done:
        """Ask for a retrain (operator)."""
        return self.run(plans.retrain(name, dataset_version=dataset_version, reason=reason))

    def apply_spec(self, spec_yaml: str, reason: str = "") -> dict[str, Any]:
        """Apply a model spec (admin)."""
        return self.run(plans.apply_spec(spec_yaml, reason))

    def publish(self, event: DataArrived | LabelsArrived) -> Published:
        """Publish a DataArrived or LabelsArrived through the registry (operator)."""
        return self.run(plans.publish(event))

    def data_arrived(self, dataset: str, version: str, uri: str, **fields: Any) -> Published:
        """Announce a dataset version (fields as DataArrived has them: sha256, format, row_count, …)."""
        return self.publish(
            DataArrived(dataset=dataset, version=version, uri=uri, producer="modelbus-client", **fields)
        )

    def labels_arrived(self, model: str, labels: Any, observed_at: datetime | None = None) -> Published:
        """Send ground truth: rows of request_id and label (a DataFrame, dicts, or {request_id: label})."""
        return self.publish(plans.labels_event(model, labels, observed_at))

    def predict(
        self,
        model: str,
        rows: Any,
        *,
        protocol: Protocol = "v1",
        version: int | None = None,
        request_id: str | None = None,
    ) -> list[Prediction]:
        """Predict rows (a DataFrame, dicts or one dict) through the rollout, or by one version (V2)."""
        return self.run(plans.predict(model, rows, protocol=protocol, version=version, request_id=request_id))

    def alerts(
        self,
        *,
        status: Literal["firing", "resolved"] | None = None,
        model: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Alerts, most recently raised first."""
        return self.run(plans.alerts(status=status, model_name=model, kind=kind, limit=limit))

    def alert(self, fingerprint: str) -> Alert:
        """One alert with its notifications."""
        return self.run(plans.alert(fingerprint))

    def ack(self, fingerprint: str, comment: str = "") -> dict[str, Any]:
        """Acknowledge an alert (operator)."""
        return self.run(plans.ack(fingerprint, comment))

    def silence(self, matchers: list[str], *, duration: str = "1h", comment: str = "") -> Silence:
        """Silence alerts matching `label=value` matchers (operator)."""
        return self.run(plans.silence(matchers, duration=duration, comment=comment))

    def silences(self, *, expired: bool = False) -> list[Silence]:
        """Active (or expired) silences."""
        return self.run(plans.silences(expired=expired))

    def expire(self, silence_id: str) -> dict[str, Any]:
        """End a silence (operator)."""
        return self.run(plans.expire(silence_id))


class AsyncClient(_Base):
    """The modelbus APIs, awaited: the same calls as `Client`."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self.http = httpx.AsyncClient(timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def run(self, plan: Plan[T]) -> T:
        """Run one planned call; raises ApiError with the server's reason."""
        try:
            response = await self.http.request(
                plan.method, self._url(plan), params=self._params(plan), json=plan.body, headers=self._headers(plan)
            )
        except httpx.TransportError as exc:
            raise self._unreachable(plan, exc) from None
        if response.status_code >= 400:
            raise refusal(plan.service, response)
        return plan.read(response.json() if response.content else None)

    async def models(self, contains: str | None = None) -> list[Model]:
        """Every model (or those whose name contains `contains`)."""
        return await self.run(plans.models(contains))

    async def model(self, name: str) -> Model:
        """One model."""
        return await self.run(plans.model(name))

    async def versions(
        self, name: str, *, status: str | None = None, metric: str | None = None, limit: int = 100
    ) -> list[Version]:
        """A model's versions, newest first."""
        return await self.run(plans.versions(name, status=status, metric=metric, limit=limit))

    async def version(self, ref: str) -> Version:
        """A version: `churn@3`, `churn@champion`, `churn`."""
        return await self.run(plans.version(ref))

    async def lineage(self, ref: str) -> Lineage:
        """A version's lineage."""
        return await self.run(plans.lineage(ref))

    async def audit(
        self, *, target: str | None = None, actor: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The audit log, newest first."""
        return await self.run(plans.audit(target=target, actor=actor, action=action, limit=limit))

    async def approve(self, ref: str, reason: str = "") -> Done:
        """Approve a version (operator)."""
        return await self.run(plans.decide(ref, "approve", reason))

    async def reject(self, ref: str, reason: str = "") -> Done:
        """Reject a version (operator)."""
        return await self.run(plans.decide(ref, "reject", reason))

    async def rollout(self, name: str, command: str, *, version: int | None = None, reason: str = "") -> Done:
        """A rollout command (operator)."""
        return await self.run(plans.rollout(name, command, version=version, reason=reason))

    async def retrain(self, name: str, *, dataset_version: str | None = None, reason: str = "") -> Done:
        """Ask for a retrain (operator)."""
        return await self.run(plans.retrain(name, dataset_version=dataset_version, reason=reason))

    async def apply_spec(self, spec_yaml: str, reason: str = "") -> dict[str, Any]:
        """Apply a model spec (admin)."""
        return await self.run(plans.apply_spec(spec_yaml, reason))

    async def publish(self, event: DataArrived | LabelsArrived) -> Published:
        """Publish a DataArrived or LabelsArrived through the registry (operator)."""
        return await self.run(plans.publish(event))

    async def data_arrived(self, dataset: str, version: str, uri: str, **fields: Any) -> Published:
        """Announce a dataset version."""
        return await self.publish(
            DataArrived(dataset=dataset, version=version, uri=uri, producer="modelbus-client", **fields)
        )

    async def labels_arrived(self, model: str, labels: Any, observed_at: datetime | None = None) -> Published:
        """Send ground truth."""
        return await self.publish(plans.labels_event(model, labels, observed_at))

    async def predict(
        self,
        model: str,
        rows: Any,
        *,
        protocol: Protocol = "v1",
        version: int | None = None,
        request_id: str | None = None,
    ) -> list[Prediction]:
        """Predict rows through the rollout, or by one version (V2)."""
        return await self.run(plans.predict(model, rows, protocol=protocol, version=version, request_id=request_id))

    async def alerts(
        self,
        *,
        status: Literal["firing", "resolved"] | None = None,
        model: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Alerts, most recently raised first."""
        return await self.run(plans.alerts(status=status, model_name=model, kind=kind, limit=limit))

    async def alert(self, fingerprint: str) -> Alert:
        """One alert."""
        return await self.run(plans.alert(fingerprint))

    async def ack(self, fingerprint: str, comment: str = "") -> dict[str, Any]:
        """Acknowledge an alert (operator)."""
        return await self.run(plans.ack(fingerprint, comment))

    async def silence(self, matchers: list[str], *, duration: str = "1h", comment: str = "") -> Silence:
        """Silence alerts (operator)."""
        return await self.run(plans.silence(matchers, duration=duration, comment=comment))

    async def silences(self, *, expired: bool = False) -> list[Silence]:
        """Silences."""
        return await self.run(plans.silences(expired=expired))

    async def expire(self, silence_id: str) -> dict[str, Any]:
        """End a silence (operator)."""
        return await self.run(plans.expire(silence_id))
