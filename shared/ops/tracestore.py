"""A small OTLP/HTTP trace receiver that keeps spans queryable through Jaeger's HTTP API shape.

The local stack runs it because Jaeger cannot be built here (see README, "Traces").
It accepts `POST /v1/traces` (protobuf or JSON) and answers `GET /api/services`,
`GET /api/traces/{trace_id}` and `GET /api/traces?service=NAME&limit=N` like Jaeger's
query service, so tests and the demo read traces the same way from either.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_TRACES = 50_000


def _hex(value: str) -> str:
    """OTLP JSON ids are base64 in MessageToDict output; Jaeger wants hex."""
    return base64.b64decode(value).hex() if value else ""


def _attribute_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return json.dumps(value)


def flatten(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Spans of an export request as Jaeger-shaped dicts, each with its service name."""
    spans = []
    body = MessageToDict(request, preserving_proto_field_name=False)
    for resource_spans in body.get("resourceSpans", []):
        resource = {
            a["key"]: _attribute_value(a["value"]) for a in resource_spans.get("resource", {}).get("attributes", [])
        }
        service = str(resource.get("service.name", "unknown"))
        for scope in resource_spans.get("scopeSpans", []):
            for span in scope.get("spans", []):
                trace_id = _hex(span.get("traceId", ""))
                references = []
                if span.get("parentSpanId"):
                    references.append(
                        {"refType": "CHILD_OF", "traceID": trace_id, "spanID": _hex(span["parentSpanId"])}
                    )
                for link in span.get("links", []):
                    references.append(
                        {"refType": "FOLLOWS_FROM", "traceID": _hex(link["traceId"]), "spanID": _hex(link["spanId"])}
                    )
                start = int(span.get("startTimeUnixNano", 0))
                end = int(span.get("endTimeUnixNano", start))
                spans.append(
                    {
                        "traceID": trace_id,
                        "spanID": _hex(span.get("spanId", "")),
                        "operationName": span.get("name", ""),
                        "references": references,
                        "startTime": start // 1000,
                        "duration": max(0, end - start) // 1000,
                        "tags": [
                            {"key": a["key"], "value": _attribute_value(a["value"])} for a in span.get("attributes", [])
                        ],
                        "serviceName": service,
                    }
                )
    return spans


class Store:
    """Spans grouped by trace, newest traces kept, appended to a JSONL file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.traces: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        if path and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self._keep(json.loads(line))

    def _keep(self, span: dict[str, Any]) -> None:
        self.traces.setdefault(span["traceID"], []).append(span)
        self.traces.move_to_end(span["traceID"])
        while len(self.traces) > MAX_TRACES:
            self.traces.popitem(last=False)

    def add(self, spans: list[dict[str, Any]]) -> None:
        with self.lock:
            for span in spans:
                self._keep(span)
            if self.path and spans:
                with self.path.open("a") as out:
                    out.writelines(json.dumps(span) + "\n" for span in spans)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        with self.lock:
            spans = list(self.traces.get(trace_id.lower(), []))
        if not spans:
            return None
        services = sorted({s["serviceName"] for s in spans})
        pids = {name: f"p{i + 1}" for i, name in enumerate(services)}
        return {
            "traceID": trace_id.lower(),
            "spans": [
                {**{k: v for k, v in s.items() if k != "serviceName"}, "processID": pids[s["serviceName"]]}
                for s in spans
            ],
            "processes": {pid: {"serviceName": name, "tags": []} for name, pid in pids.items()},
        }

    def search(self, service: str | None, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            ids = [
                tid
                for tid, spans in reversed(self.traces.items())
                if service is None or any(s["serviceName"] == service for s in spans)
            ][:limit]
        return [t for t in (self.trace(tid) for tid in ids) if t]

    def services(self) -> list[str]:
        with self.lock:
            return sorted({s["serviceName"] for spans in self.traces.values() for s in spans})


def _handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/v1/traces":
                self._send(404, b'{"error": "only /v1/traces is served"}')
                return
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = ExportTraceServiceRequest()
            try:
                if "json" in (self.headers.get("Content-Type") or ""):
                    ParseDict(json.loads(data), request)
                else:
                    request.ParseFromString(data)
            except Exception as exc:
                self._send(400, json.dumps({"error": f"not an OTLP trace export: {exc}"}).encode())
                return
            store.add(flatten(request))
            self._send(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == "/api/services":
                self._send(200, json.dumps({"data": store.services()}).encode())
            elif url.path.startswith("/api/traces/"):
                found = store.trace(url.path.rsplit("/", 1)[1])
                if found is None:
                    self._send(
                        404, json.dumps({"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}).encode()
                    )
                else:
                    self._send(200, json.dumps({"data": [found]}).encode())
            elif url.path == "/api/traces":
                service = query.get("service", [None])[0]
                limit = int(query.get("limit", ["20"])[0])
                self._send(200, json.dumps({"data": store.search(service, limit)}).encode())
            elif url.path == "/healthz":
                self._send(200, b'{"status": "ok"}')
            else:
                self._send(404, b'{"error": "not found"}')

    return Handler


def serve(otlp: tuple[str, int], query: tuple[str, int], store_path: Path | None) -> None:
    """Serve OTLP on one address and the query API on another until killed."""
    store = Store(store_path)
    handler = _handler(store)
    receivers = [ThreadingHTTPServer(otlp, handler), ThreadingHTTPServer(query, handler)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in receivers]
    for thread in threads:
        thread.start()
    print(f"OTLP/HTTP on {otlp[0]}:{otlp[1]}, query API on {query[0]}:{query[1]}", flush=True)
    for thread in threads:
        thread.join()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--otlp", default="127.0.0.1:4318", help="OTLP/HTTP listen address")
    parser.add_argument("--query", default="127.0.0.1:16686", help="query API listen address")
    parser.add_argument("--store", type=Path, default=None, help="JSONL file that keeps spans across restarts")
    args = parser.parse_args()
    serve(_address(args.otlp), _address(args.query), args.store)
