from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

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
