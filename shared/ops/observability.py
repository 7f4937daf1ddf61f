"""The local stack's eyes: Jaeger v2 (traces, built from its Go module by scripts/bootstrap.sh)
and Prometheus (metrics, from the OS packages, scraping the platform's seven processes)."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import httpx

from shared.ops.components import Component, StackError, port_open, wait_until

JAEGER_VERSION = "v1.75.0"
# Short enough that a test's few-minute lifecycle gives every rate() two samples.
SCRAPE_SECONDS = 5


class Traces(Component):
    """Jaeger v2 (`jaeger`, built from its Go module by scripts/bootstrap.sh into .modelbus/bin):
    OTLP on 4317 (gRPC) and MODELBUS_OTLP_ENDPOINT (HTTP), the query API on
    MODELBUS_TRACE_QUERY_URL, spans in memory."""

    marker = "jaeger"
    health_port = 13133

    @property
    def binary(self) -> Path:
        return self.settings.stack_dir.resolve() / "bin" / "jaeger"

    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.settings.otlp_endpoint or "http://127.0.0.1:4318")
        return url.hostname or "127.0.0.1", url.port or 4318

    def address(self) -> str:
        return f"OTLP {self.settings.otlp_endpoint}, query {self.settings.trace_query_url} (Jaeger {JAEGER_VERSION})"

    def config(self) -> str:
        """Jaeger's configuration (an OpenTelemetry Collector file): every endpoint on 127.0.0.1."""
        host, port = self.host_port()
        query = urlparse(self.settings.trace_query_url)
        return f"""service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {query.hostname}:{query.port}
    grpc:
      endpoint: {query.hostname}:{(query.port or 16686) - 1}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: {host}:{self.health_port}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{port - 1}
      http:
        endpoint: {host}:{port}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""

    def start(self) -> None:
        if not self.binary.exists():
            raise StackError(
                f"Jaeger {JAEGER_VERSION} is not built at {self.binary}: run scripts/bootstrap.sh "
                f"(it builds it from the Go module in scripts/jaeger with `go build`)"
            )
        self.check_port_free()
        host, port = self.host_port()
        config = self.home / "jaeger.yaml"
        config.write_text(self.config())
        self.say(f"[traces] starting Jaeger {JAEGER_VERSION} (OTLP {host}:{port}, in-memory storage)")
        self.spawn([str(self.binary), "--config", str(config)])
        query = urlparse(self.settings.trace_query_url)
        wait_until(
            "Jaeger",
            lambda: (
                not self.exited_early()
                and port_open(host, port)
                and port_open(query.hostname or host, query.port or 16686)
            ),
            timeout=60,
            say=self.say,
            log=self.log_file,
        )


class Metrics(Component):
    """Prometheus (Debian's `prometheus` package) on MODELBUS_PROMETHEUS_URL, scraping the
    platform's processes on their default ports every SCRAPE_SECONDS, its data under the stack
    folder (kept 7 days)."""

    marker = "prometheus"

    @property
    def binary(self) -> Path | None:
        found = shutil.which("prometheus") or "/usr/bin/prometheus"
        return Path(found) if Path(found).exists() else None

    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.settings.prometheus_url)
        return url.hostname or "127.0.0.1", url.port or 9090

    def address(self) -> str:
        return f"{self.settings.prometheus_url} (scraping {len(self.targets())} processes)"

    def targets(self) -> dict[str, str]:
        """Each platform process and the host:port of its /metrics."""
        from shared.ops.platform import processes

        return {p.name: f"127.0.0.1:{p.port}" for p in processes(self.settings)}

    def config(self) -> str:
        """prometheus.yml: one job, a target per process, labelled with the process's name."""
        lines = [
            "global:",
            f"  scrape_interval: {SCRAPE_SECONDS}s",
            f"  evaluation_interval: {SCRAPE_SECONDS}s",
            "scrape_configs:",
            "  - job_name: modelbus",
            "    metrics_path: /metrics",
            "    static_configs:",
        ]
        for name, target in self.targets().items():
            lines += [f'      - targets: ["{target}"]', "        labels:", f"          service: {name}"]
        return "\n".join(lines) + "\n"

    def _ready(self) -> bool:
        if self.exited_early():
            raise StackError(f"prometheus exited during start-up; see {self.log_file}")
        try:
            return httpx.get(f"{self.settings.prometheus_url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        if self.binary is None:
            raise StackError(
                "prometheus is not installed: run scripts/bootstrap.sh (it installs Debian's `prometheus` "
                "package), or put a prometheus binary on PATH"
            )
        self.check_port_free()
        host, port = self.host_port()
        config = self.home / "prometheus.yml"
        config.write_text(self.config())
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.say(f"[metrics] starting Prometheus on {host}:{port}, scraping every {SCRAPE_SECONDS} s")
        self.spawn(
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=7d",
                f"--web.listen-address={host}:{port}",
                "--web.enable-lifecycle",
            ]
        )
        wait_until("Prometheus", self._ready, timeout=60, say=self.say, log=self.log_file)
