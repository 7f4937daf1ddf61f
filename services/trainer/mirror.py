"""Training runs mirrored to an MLflow tracking server, for teams who keep the MLflow UI.

Each modelbus run becomes an MLflow parent run in the experiment `modelbus/<model>` (tags: the
modelbus run id, dataset and its digest, spec revision, trigger; the winner's params and
validation metrics), with one child run per candidate (its params, CV score and validation
metrics). When the registry numbers the version, the parent run is tagged with it and the winner
becomes a version of the MLflow registered model of the same name, pointing at modelbus' artifacts.

It speaks MLflow's REST API (`/api/2.0/mlflow/...`) over httpx rather than through the mlflow
package, which would bring its own dependency tree into every trainer. A server that is down
never fails a training: the mirror works after the run has closed, in the background, retries
with backoff for `mlflow_retry_seconds`, and reports each failure in the log and in
`modelbus_mlflow_mirror_total{outcome}`. Repeating a mirror (a redelivery) finds what it made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter

from shared.contract.events import ModelRegistered, ModelTrained

log = logging.getLogger("modelbus.trainer.mlflow")
API = "/api/2.0/mlflow"


class Mirror(Protocol):
    """What the trainer tells a mirror; both calls return at once."""

    def run_finished(self, trained: ModelTrained) -> None:
        """Mirror a finished run (parent and candidates)."""

    def version_registered(self, registered: ModelRegistered) -> None:
        """Tag the run with its version and register the version."""


class NoMirror:
    """No MLflow server configured."""

    def run_finished(self, trained: ModelTrained) -> None:
        """Nothing to do."""

    def version_registered(self, registered: ModelRegistered) -> None:
        """Nothing to do."""


class MlflowError(Exception):
    """MLflow answered with an error; `retry` says whether trying again may help."""

    def __init__(self, message: str, *, code: str = "", retry: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retry = retry


def _tags(values: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)[:5000]} for k, v in values.items() if v is not None]


def _metrics(values: dict[str, float], stamp: int, prefix: str = "") -> list[dict[str, Any]]:
    return [
        {"key": f"{prefix}{k}", "value": float(v), "timestamp": stamp, "step": 0}
        for k, v in values.items()
        if v == v  # NaN: a metric that could not be computed is left out
    ]


@dataclass
class MlflowMirror:
    """Mirrors runs and versions to the MLflow tracking server at `uri`."""

    uri: str
    retry_seconds: float = 300.0
    registry: CollectorRegistry | None = None
    http: httpx.AsyncClient | None = None
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.http = self.http or httpx.AsyncClient(base_url=self.uri.rstrip("/"), timeout=10)
        self.outcomes = Counter(
            "modelbus_mlflow_mirror",
            "Runs and versions mirrored to MLflow, by outcome",
            ["what", "outcome"],
            registry=self.registry,
        )

    # ------------------------------------------------------------ what the trainer calls

    def run_finished(self, trained: ModelTrained) -> None:
        """Mirror a finished run, in the background."""
        self._spawn("run", f"{trained.model} {trained.run_id}", lambda: self.log_run(trained))

    def version_registered(self, registered: ModelRegistered) -> None:
        """Tag the run with its version and register the version, in the background."""
        what = f"{registered.model}@{registered.version}"
        self._spawn("version", what, lambda: self.register(registered))

    async def drain(self) -> None:
        """Wait for every mirror in flight (tests; shutdown)."""
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)

    async def close(self) -> None:
        """Stop what is in flight and close the connection."""
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*list(self.pending), return_exceptions=True)
        assert self.http is not None
        await self.http.aclose()

    def _spawn(self, kind: str, what: str, work: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._retrying(kind, what, work), name=f"mlflow-{kind}")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _retrying(self, kind: str, what: str, work: Callable[[], Awaitable[None]]) -> None:
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                await work()
            except (httpx.TransportError, MlflowError) as exc:
                retry = not isinstance(exc, MlflowError) or exc.retry
                if not retry or time.monotonic() + 2**attempt > deadline:
                    self.outcomes.labels(kind, "failed").inc()
                    log.error("MLflow mirror of %s gave up after %d attempt(s): %s", what, attempt, _why(exc))
                    return
                self.outcomes.labels(kind, "retried").inc()
                log.warning("MLflow mirror of %s failed (%s); retrying in %d s", what, _why(exc), 2**attempt)
                await asyncio.sleep(2**attempt)
            else:
                self.outcomes.labels(kind, "mirrored").inc()
                log.info("MLflow mirror of %s done (%s)", what, self.uri)
                return

    # ------------------------------------------------------------ MLflow's REST API

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One REST call; MlflowError with MLflow's error code when it refuses."""
        assert self.http is not None
        if method == "GET":
            answer = await self.http.get(f"{API}/{path}", params=body)
        else:
            answer = await self.http.post(f"{API}/{path}", json=body or {})
        if answer.status_code >= 400:
            try:
                error = answer.json()
            except ValueError:
                error = {"message": answer.text[:300]}
            code = str(error.get("error_code", ""))
            raise MlflowError(
                f"{answer.status_code} {code}: {error.get('message', '')}"[:500],
                code=code,
                retry=answer.status_code >= 500 or answer.status_code == 429,
            )
        found: dict[str, Any] = answer.json()
        return found

    async def experiment(self, model: str) -> str:
        """The id of the experiment `modelbus/<model>`, created on first use."""
        name = f"modelbus/{model}"
        try:
            found = await self.call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except MlflowError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            created = await self.call("POST", "experiments/create", {"name": name})
            return str(created["experiment_id"])
        except MlflowError as exc:  # another trainer created it meanwhile
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = await self.call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])

    async def search(self, experiment: str, run_id: str, role: str) -> list[dict[str, Any]]:
        """The MLflow runs of a modelbus run: its parent (`run`) or its candidates (`candidate`)."""
        query = f"tags.`modelbus.run_id` = '{run_id}' and tags.`modelbus.role` = '{role}'"
        body = {"experiment_ids": [experiment], "filter": query, "max_results": 1000}
        found: list[dict[str, Any]] = (await self.call("POST", "runs/search", body)).get("runs", [])
        return found

    async def _new_run(self, experiment: str, name: str, stamp: int, tags: dict[str, Any]) -> str:
        body = {"experiment_id": experiment, "start_time": stamp, "run_name": name, "tags": _tags(tags)}
        return str((await self.call("POST", "runs/create", body))["run"]["info"]["run_id"])

    async def _finish(self, run: str, stamp: int, params: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        batch = {"run_id": run, "params": _tags(params)[:100], "metrics": metrics[:1000]}
        await self.call("POST", "runs/log-batch", batch)
        await self.call("POST", "runs/update", {"run_id": run, "status": "FINISHED", "end_time": stamp})

    async def log_run(self, trained: ModelTrained) -> None:
        """The parent run and one child run per candidate; a repeat finishes what is missing."""
        experiment = await self.experiment(trained.model)
        parents = await self.search(experiment, trained.run_id, "run")
        if parents and parents[0]["info"]["status"] == "FINISHED":
            return
        stamp = int(trained.occurred_at.timestamp() * 1000)
        began = stamp - int(trained.training_seconds * 1000)
        common = {
            "modelbus.run_id": trained.run_id,
            "modelbus.model": trained.model,
            "modelbus.dataset": trained.dataset,
            "modelbus.dataset_version": trained.dataset_version,
            "modelbus.data_sha256": trained.data_sha256,
            "modelbus.spec_revision": trained.spec_revision,
            "modelbus.trigger": trained.trigger,
            "modelbus.code_version": trained.code_version,
        }
        if parents:
            parent = str(parents[0]["info"]["run_id"])
        else:
            tags = {**common, "modelbus.role": "run", "modelbus.estimator": trained.estimator}
            parent = await self._new_run(experiment, f"{trained.model} {trained.run_id}", began, tags)
        done = {
            tag["value"]
            for run in await self.search(experiment, trained.run_id, "candidate")
            for tag in run["data"].get("tags", [])
            if tag["key"] == "modelbus.candidate" and run["info"]["status"] == "FINISHED"
        }
        for index, candidate in enumerate(trained.candidates):
            if str(index) in done:
                continue
            tags = {
                **common,
                "modelbus.role": "candidate",
                "modelbus.candidate": index,
                "modelbus.estimator": candidate.estimator,
                "mlflow.parentRunId": parent,
            }
            child = await self._new_run(
                experiment, f"{trained.run_id} {candidate.estimator.rsplit('.', 1)[-1]}", began, tags
            )
            metrics = _metrics(candidate.metrics or {"score": candidate.score}, stamp, "validation_")
            if candidate.cv_score is not None:
                metrics += _metrics({"cv_score": candidate.cv_score}, stamp)
            await self._finish(child, stamp, {"estimator": candidate.estimator, **candidate.params}, metrics)
        metrics = _metrics(trained.metrics, stamp, "validation_")
        await self._finish(parent, stamp, {"estimator": trained.estimator, **trained.params}, metrics)

    async def register(self, registered: ModelRegistered) -> None:
        """Tag the parent run with the version; the version as an MLflow model version (once)."""
        experiment = await self.experiment(registered.model)
        parents = await self.search(experiment, registered.run_id, "run")
        if not parents or parents[0]["info"]["status"] != "FINISHED":
            raise MlflowError(f"run {registered.run_id} is not mirrored yet", retry=True)
        run = str(parents[0]["info"]["run_id"])
        tag = {"run_id": run, "key": "modelbus.version", "value": str(registered.version)}
        await self.call("POST", "runs/set-tag", tag)
        try:
            body = {"name": registered.model, "tags": _tags({"modelbus.model": registered.model})}
            await self.call("POST", "registered-models/create", body)
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = await self.call(
            "GET", "model-versions/search", {"filter": f"name = '{registered.model}' and run_id = '{run}'"}
        )
        if existing.get("model_versions"):
            return
        model_file = next((a for a in registered.artifacts if a.name.startswith("model.")), registered.artifacts[0])
        await self.call(
            "POST",
            "model-versions/create",
            {
                "name": registered.model,
                "source": model_file.uri.rsplit("/", 1)[0],
                "run_id": run,
                "description": f"modelbus {registered.model}@{registered.version}",
                "tags": _tags({"modelbus.version": registered.version, "modelbus.run_id": registered.run_id}),
            },
        )


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, httpx.TransportError) else str(exc)
