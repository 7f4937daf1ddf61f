"""The local stack's Jaeger (v2, built from its Go module) receives what the services' OTLP
exporter sends, and its query API gives each span its service, parent and links: the shape the
demo, the end-to-end tests and the console read."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link

from shared.runtime.settings import Settings
from tests.integration.conftest import eventually


async def test_jaeger_keeps_parents_links_and_services_of_otlp_spans(base_settings: Settings) -> None:
    assert base_settings.otlp_endpoint, "the stack's OTLP endpoint"
    exporter = OTLPSpanExporter(endpoint=base_settings.otlp_endpoint.rstrip("/") + "/v1/traces", timeout=5)
    provider = TracerProvider(resource=Resource.create({"service.name": "it-monitor"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("predict") as prediction:
        pass
    with (
        tracer.start_as_current_span("window") as window,
        tracer.start_as_current_span("drift", links=[Link(prediction.get_span_context())]),
    ):
        pass
    provider.shutdown()
    trace_id = format(window.get_span_context().trace_id, "032x")
    found: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_settings.trace_query_url, timeout=10) as client:

        async def stored() -> bool:
            answer = await client.get(f"/api/traces/{trace_id}")
            if answer.status_code != 200 or not answer.json().get("data"):
                return False
            found.update(answer.json()["data"][0])
            return len(found["spans"]) == 2

        await eventually(stored, timeout=20, what="the trace in Jaeger")
        services = (await client.get("/api/services")).json()["data"]
    spans = {s["operationName"]: s for s in found["spans"]}
    assert set(spans) == {"window", "drift"}
    assert {found["processes"][s["processID"]]["serviceName"] for s in found["spans"]} == {"it-monitor"}
    refs = {r["refType"]: r["spanID"] for r in spans["drift"]["references"]}
    assert refs["CHILD_OF"] == format(window.get_span_context().span_id, "016x")
    assert refs["FOLLOWS_FROM"] == format(prediction.get_span_context().span_id, "016x")
    assert "it-monitor" in services
