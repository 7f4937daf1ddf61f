from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link

from shared.ops.tracestore import Store, flatten
from shared.runtime.settings import Settings
from shared.runtime.telemetry import configure_logging


def test_logs_are_json_lines_carrying_service_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(service_name="trainer", log_level="INFO"))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("fit") as span:
        logging.getLogger("modelbus.test").info("fitting %d candidates", 2)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "fitting 2 candidates"
    assert line["service"] == "trainer"
    assert line["level"] == "INFO"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[object] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def test_the_trace_receiver_keeps_parents_links_and_services_in_jaeger_shape() -> None:
    keep = _Keep()
    provider = TracerProvider(resource=Resource.create({"service.name": "monitor"}))
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("predict") as prediction:
        pass
    with tracer.start_as_current_span("window") as window:
        with tracer.start_as_current_span("drift", links=[Link(prediction.get_span_context())]):
            pass
    request = encode_spans(keep.spans)  # what the OTLP exporter sends
    assert isinstance(request, ExportTraceServiceRequest)
    store = Store(None)
    store.add(flatten(request))
    trace = store.trace(format(window.get_span_context().trace_id, "032x"))
    assert trace is not None
    spans = {s["operationName"]: s for s in trace["spans"]}
    assert set(spans) == {"window", "drift"}
    refs = {r["refType"]: r["spanID"] for r in spans["drift"]["references"]}
    assert refs["CHILD_OF"] == format(window.get_span_context().span_id, "016x")
    assert refs["FOLLOWS_FROM"] == format(prediction.get_span_context().span_id, "016x")
    assert store.services() == ["monitor"]
