"""The MLflow mirror never fails a training: a server that is down is retried with backoff, then
given up on and reported, in the log and in its metric."""

from __future__ import annotations

import logging

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.trainer.mirror import MlflowMirror
from shared.contract.events import ModelTrained
from tests.support.examples import example


async def test_a_server_that_is_down_is_retried_then_given_up_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    registry = CollectorRegistry()
    http = httpx.AsyncClient(base_url="http://mlflow.invalid", transport=httpx.MockTransport(refuse))
    mirror = MlflowMirror("http://mlflow.invalid", retry_seconds=3, registry=registry, http=http)
    with caplog.at_level(logging.WARNING, logger="modelbus.trainer.mlflow"):
        mirror.run_finished(example(ModelTrained, model="m", run_id="run-1"))  # returns at once
        await mirror.drain()
    await mirror.close()
    assert len(calls) == 2, "one retry fits in the 3 s allowed (2 s backoff), the next would not"
    value = registry.get_sample_value
    assert value("modelbus_mlflow_mirror_total", {"what": "run", "outcome": "retried"}) == 1
    assert value("modelbus_mlflow_mirror_total", {"what": "run", "outcome": "failed"}) == 1
    assert any("gave up after 2 attempt(s): ConnectError" in r.getMessage() for r in caplog.records)


async def test_a_refusal_that_retrying_cannot_mend_is_reported_at_once(caplog: pytest.LogCaptureFixture) -> None:
    def bad_request(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error_code": "INVALID_PARAMETER_VALUE", "message": "no such thing"})

    registry = CollectorRegistry()
    http = httpx.AsyncClient(base_url="http://mlflow.invalid", transport=httpx.MockTransport(bad_request))
    mirror = MlflowMirror("http://mlflow.invalid", retry_seconds=60, registry=registry, http=http)
    with caplog.at_level(logging.ERROR, logger="modelbus.trainer.mlflow"):
        mirror.run_finished(example(ModelTrained, model="m", run_id="run-1"))
        await mirror.drain()
    await mirror.close()
    assert registry.get_sample_value("modelbus_mlflow_mirror_total", {"what": "run", "outcome": "failed"}) == 1
    assert any("INVALID_PARAMETER_VALUE: no such thing" in r.getMessage() for r in caplog.records)
