"""Every call the client makes, as a plan: which service, method, path, parameters and body, and
how the answer is read. The sync and async clients run the same plans, so they cannot differ."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from pydantic import TypeAdapter

from modelbus.types import Alert, AuditEntry, Done, Lineage, Model, Prediction, Published, Silence, Version
from shared.contract.events import DataArrived, Label, LabelsArrived

T = TypeVar("T")
Service = Literal["registry", "serving", "alerter"]
Protocol = Literal["v1", "v2"]


@dataclass(frozen=True)
class Plan(Generic[T]):
    """One HTTP call and how its JSON answer becomes T."""

    service: Service
    method: str
    path: str
    read: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _list(kind: type[T]) -> Callable[[Any], list[T]]:
    adapter = TypeAdapter(list[kind])  # type: ignore[valid-type]
    return adapter.validate_python


def _one(kind: type[T]) -> Callable[[Any], T]:
    return kind.model_validate  # type: ignore[attr-defined,no-any-return]


def _raw(answer: Any) -> Any:
    return answer


def _ref(ref: str) -> tuple[str, str]:
    """`NAME@VERSION` or `NAME@ALIAS` (or `NAME`: its latest) as (name, reference)."""
    name, _, reference = ref.partition("@")
    if not name:
        raise ValueError(f"a version is named NAME@VERSION or NAME@ALIAS, got {ref!r}")
    return quote(name, safe=""), quote(reference or "latest", safe="")


def records(rows: Any) -> list[dict[str, Any]]:
    """Rows from a pandas DataFrame, a list of dicts or one dict; NaN as null, numpy scalars as Python."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        found = rows.to_dict("records")
    elif isinstance(rows, Mapping):
        found = [dict(rows)]
    elif isinstance(rows, Iterable):
        found = [dict(r) for r in rows]
    else:
        raise TypeError(f"rows are a pandas DataFrame, a list of dicts or a dict, not {type(rows).__name__}")
    return [{str(k): _plain(v) for k, v in row.items()} for row in found]


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# ---------------------------------------------------------------- registry


def models(contains: str | None = None) -> Plan[list[Model]]:
    return Plan("registry", "GET", "/v1/models", _list(Model), {"q": contains})


def model(name: str) -> Plan[Model]:
    return Plan("registry", "GET", f"/v1/models/{quote(name, safe='')}", _one(Model))


def versions(
    name: str, *, status: str | None = None, metric: str | None = None, limit: int = 100
) -> Plan[list[Version]]:
    path = f"/v1/models/{quote(name, safe='')}/versions"
    return Plan("registry", "GET", path, _list(Version), {"status": status, "metric": metric, "limit": limit})


def version(ref: str) -> Plan[Version]:
    name, reference = _ref(ref)
    return Plan("registry", "GET", f"/v1/models/{name}/versions/{reference}", _one(Version))


def lineage(ref: str) -> Plan[Lineage]:
    name, reference = _ref(ref)
    return Plan("registry", "GET", f"/v1/models/{name}/versions/{reference}/lineage", _one(Lineage))


def audit(
    *, target: str | None = None, actor: str | None = None, action: str | None = None, limit: int = 100
) -> Plan[list[AuditEntry]]:
    params = {"target": target, "actor": actor, "action": action, "limit": limit}
    return Plan("registry", "GET", "/v1/audit", _list(AuditEntry), params)


def decide(ref: str, decision: Literal["approve", "reject"], reason: str) -> Plan[Done]:
    name, reference = _ref(ref)
    return Plan(
        "registry", "POST", f"/v1/models/{name}/versions/{reference}/{decision}", _one(Done), body={"reason": reason}
    )


def rollout(name: str, command: str, *, version: int | None = None, reason: str = "") -> Plan[Done]:
    body: dict[str, Any] = {"reason": reason} | ({"version": version} if version is not None else {})
    return Plan("registry", "POST", f"/v1/models/{quote(name, safe='')}/rollout/{command}", _one(Done), body=body)


def retrain(name: str, *, dataset_version: str | None = None, reason: str = "") -> Plan[Done]:
    body = {"dataset_version": dataset_version, "reason": reason}
    return Plan("registry", "POST", f"/v1/models/{quote(name, safe='')}/retrain", _one(Done), body=body)


def apply_spec(spec_yaml: str, reason: str = "") -> Plan[dict[str, Any]]:
    return Plan("registry", "POST", "/v1/specs", _raw, body={"spec_yaml": spec_yaml, "reason": reason})


def publish(event: DataArrived | LabelsArrived) -> Plan[Published]:
    """Publish through the registry (validated here with the contract's model, and there again)."""
    route = "data-arrived" if isinstance(event, DataArrived) else "labels-arrived"
    return Plan("registry", "POST", f"/v1/events/{route}", _one(Published), body=event.model_dump(mode="json"))


def labels_event(model_name: str, labels: Any, observed_at: datetime | None = None) -> LabelsArrived:
    """A LabelsArrived from rows of `request_id` and `label` (a DataFrame, dicts, or a mapping id → label)."""
    at = observed_at or datetime.now(UTC)
    if isinstance(labels, Mapping) and not {"request_id", "label"} <= set(labels):
        rows = [{"request_id": str(k), "label": v} for k, v in labels.items()]
    else:
        rows = records(labels)
    return LabelsArrived(
        model=model_name,
        labels=[
            Label(request_id=r["request_id"], label=r["label"], observed_at=r.get("observed_at") or at) for r in rows
        ],
    )


# ---------------------------------------------------------------- serving


def predict(
    name: str, rows: Any, *, protocol: Protocol = "v1", version: int | None = None, request_id: str | None = None
) -> Plan[list[Prediction]]:
    """Predict rows through the model's rollout (or one version, V2 only)."""
    found = records(rows)
    if not found:
        raise ValueError("no rows to predict")
    headers = {"x-request-id": request_id} if request_id else {}
    quoted = quote(name, safe="")
    if protocol == "v1":
        if version is not None:
            raise ValueError("naming a version is the V2 protocol's: predict(..., protocol='v2', version=N)")
        return Plan(
            "serving", "POST", f"/v1/models/{quoted}:predict", _v1_answers, body={"instances": found}, headers=headers
        )
    columns: dict[str, list[Any]] = {}
    for row in found:
        for key in row:
            columns.setdefault(key, [])
    for row in found:
        for key, values in columns.items():
            values.append(row.get(key))
    inputs = [
        {"name": key, "shape": [len(values)], "datatype": _datatype(values), "data": values}
        for key, values in columns.items()
    ]
    path = f"/v2/models/{quoted}" + (f"/versions/{version}" if version is not None else "") + "/infer"
    body: dict[str, Any] = {"inputs": inputs} | ({"id": request_id} if request_id else {})
    return Plan("serving", "POST", path, _v2_answers, body=body)


def _datatype(values: list[Any]) -> str:
    given = [v for v in values if v is not None]
    if given and all(isinstance(v, int | float) and not isinstance(v, bool) for v in given):
        return "FP64"
    return "BYTES"


def _v1_answers(answer: Any) -> list[Prediction]:
    found = answer["predictions"] if "predictions" in answer else [{k: v for k, v in answer.items() if k != "model"}]
    return [Prediction.model_validate(a) for a in found]


def _v2_answers(answer: Any) -> list[Prediction]:
    outputs = {o["name"]: o for o in answer["outputs"]}
    labels = outputs["predict"]["data"]
    parameters = answer.get("parameters") or {}
    given = parameters.get("version", answer.get("model_version"))
    versions = [int(v) for v in str(given).split(",")] if "," in str(given) else [int(given)] * len(labels)
    request_id = parameters.get("request_id") or answer.get("id") or ""
    ids = [request_id] if len(labels) == 1 else [f"{request_id}-{i}" for i in range(len(labels))]
    probabilities: list[dict[str, float] | None] = [None] * len(labels)
    if "predict_proba" in outputs:
        proba = outputs["predict_proba"]
        classes = json.loads(proba.get("parameters", {}).get("classes", "[]"))
        width = len(classes)
        probabilities = [
            dict(zip(classes, proba["data"][i * width : (i + 1) * width], strict=True)) for i in range(len(labels))
        ]
    role = parameters.get("role", "")
    return [
        Prediction(
            request_id=ids[i], version=versions[i], role=role, prediction=labels[i], probabilities=probabilities[i]
        )
        for i in range(len(labels))
    ]


# ---------------------------------------------------------------- alerter


def alerts(
    *, status: str | None = None, model_name: str | None = None, kind: str | None = None, limit: int = 100
) -> Plan[list[Alert]]:
    params = {"status": status, "model": model_name, "kind": kind, "limit": limit}
    return Plan("alerter", "GET", "/v1/alerts", _list(Alert), params)


def alert(fingerprint: str) -> Plan[Alert]:
    return Plan("alerter", "GET", f"/v1/alerts/{quote(fingerprint, safe='')}", _one(Alert))


def ack(fingerprint: str, comment: str = "") -> Plan[dict[str, Any]]:
    return Plan("alerter", "POST", f"/v1/alerts/{quote(fingerprint, safe='')}/ack", _raw, body={"comment": comment})


def silence(matchers: list[str], *, duration: str = "1h", comment: str = "") -> Plan[Silence]:
    body = {"matchers": matchers, "duration": duration, "comment": comment}
    return Plan("alerter", "POST", "/v1/silences", _one(Silence), body=body)


def silences(*, expired: bool = False) -> Plan[list[Silence]]:
    return Plan("alerter", "GET", "/v1/silences", _list(Silence), {"expired": expired})


def expire(silence_id: str) -> Plan[dict[str, Any]]:
    return Plan("alerter", "DELETE", f"/v1/silences/{quote(silence_id, safe='')}", _raw)
