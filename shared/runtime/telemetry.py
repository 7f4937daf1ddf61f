"""Traces and logs: one tracer provider per service (OTLP/HTTP), JSON logs with trace ids."""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pythonjsonlogger.json import JsonFormatter

from shared.runtime.settings import Settings


def make_tracer_provider(settings: Settings) -> TracerProvider:
    """A tracer provider named after the service, exporting to the OTLP endpoint if one is set."""
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otlp_endpoint:
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces", timeout=5)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


class _TraceIds(logging.Filter):
    """Adds the current trace and span ids to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        return True


def configure_logging(settings: Settings) -> None:
    """JSON logs on stderr, one object per line, carrying service, trace and span ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceIds())
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": settings.service_name},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def code_version() -> str:
    """The version of the running modelbus code (what trained or imported a model)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("modelbus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
