"""The local stack's Apache Kafka, from its Maven artifacts: KRaft nodes that are each a broker and
a controller. One node by default; a cluster of three (a controller quorum of three, topics
replicated three times with min.insync.replicas=2) when `MODELBUS_KAFKA_BOOTSTRAP` lists three
addresses, which `modelbus stack up --brokers 3` does. Node i listens on the i-th address and
its controller on the port after it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import string
import subprocess
import time
from pathlib import Path

from shared.ops import credentials
from shared.ops.components import FILES, Component, Say, StackError, port_open, run_command, wait_until
from shared.runtime.settings import Settings

# Written beside a node's data once its storage is formatted with the admin's SCRAM credential (a
# digest of the password); storage formatted before, or for other credentials, is formatted again
# (a local stack's data only).
SECURED = "secured"


def broker_addresses(settings: Settings) -> list[tuple[str, int]]:
    """The brokers the settings name, in order: the local stack runs one node per address."""
    found = []
    for item in filter(None, (part.strip() for part in settings.kafka_bootstrap.split(","))):
        host, _, port = item.rpartition(":")
        found.append((host or "127.0.0.1", int(port)))
    return found


def cluster_bootstrap(brokers: int, *, host: str = "127.0.0.1", port: int = 9092) -> str:
    """The bootstrap list of a local cluster of `brokers` nodes (ports 9092, 9094, 9096, …)."""
    return ",".join(f"{host}:{port + 2 * index}" for index in range(brokers))


def nodes(settings: Settings, say: Say) -> list[Kafka]:
    """The Kafka nodes of the local stack: `kafka`, or `kafka-1` … `kafka-N` for a cluster."""
    addresses = broker_addresses(settings)
    if len(addresses) == 1:
        return [Kafka("kafka", settings, say)]
    return [Kafka(f"kafka-{index}", settings, say, node_id=index) for index in range(1, len(addresses) + 1)]


def private_file(path: Path) -> Path:
    """`path`, created empty with mode 0600 (or made so), for a file that holds a secret."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    return path


def java_quoted(argument: str) -> str:
    """One argument of a Java @argfile, quoted (spaces and backslashes survive)."""
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Kafka(Component):
    """One Apache Kafka 4.x node in KRaft combined mode, jars resolved from Maven Central."""

    marker = "kafka.Kafka"

    def __init__(
        self, name: str, settings: Settings, say: Say, *, node_id: int = 0, advertised_port: int = 0, open: bool = False
    ) -> None:
        super().__init__(name, settings, say)
        self.node_id = node_id  # 0: the single node of a one-broker stack
        # An open node (no authentication, no authorizer): bench/sasl.py's baseline, never the stack.
        self.open = open
        # Clients are told to connect here (a proxy in front of the broker, in the fault tests); 0: its own port.
        self.advertised_port = advertised_port

    @property
    def cluster(self) -> list[tuple[str, int]]:
        return broker_addresses(self.settings) if self.node_id else broker_addresses(self.settings)[:1]

    def host_port(self) -> tuple[str, int]:
        return self.cluster[max(self.node_id, 1) - 1]

    @property
    def jar_home(self) -> Path:
        """Where the jars are: one copy for every node."""
        return self.settings.stack_dir.resolve() / "kafka"

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
        lib = self.jar_home / "lib"
        stamp = lib / f".resolved-{hashlib.sha256((FILES / 'pom.xml').read_bytes()).hexdigest()[:16]}"
        if stamp.exists():
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
        for old in lib.glob(".resolved-*"):
            old.unlink()
        stamp.touch()
        self.say(f"[kafka] {len(list(lib.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s")
        return lib

    def start(self) -> None:
        """Start this node and wait for it (a node of a cluster: see `spawn_node` and `KafkaCluster`)."""
        self.spawn_node()
        wait_until("Kafka metadata", self.metadata_ok, timeout=90, say=self.say, log=self.log_file)
        if not self.open:
            announce_users(self.settings, self.say)

    def spawn_node(self, cluster_id: str | None = None) -> None:
        """Format this node's storage if new (with `cluster_id` for a cluster), then start it."""
        self.check_port_free()
        java = self._java()
        lib = self.jars()
        host, port = self.host_port()
        data = self.home / "data"
        config = self.home / "server.properties"
        cluster = self.cluster
        if self.node_id:
            voters = ",".join(f"{i}@{h}:{p + 1}" for i, (h, p) in enumerate(cluster, 1))
            quorum = f"controller.quorum.voters={voters}"
        else:
            quorum = f"controller.quorum.bootstrap.servers={host}:{port + 1}"
        replicas = min(3, len(cluster))
        admin_password = credentials.ensure(self.settings)["admin"]
        places = {
            "host": host, "port": port, "controller_port": port + 1, "advertised_port": self.advertised_port or port,
            "admin_password": admin_password,
        }  # fmt: skip
        security = string.Template((FILES / ("open.properties" if self.open else "security.properties")).read_text())
        template = string.Template((FILES / "server.properties").read_text())
        private_file(config).write_text(
            template.substitute(
                node_id=max(self.node_id, 1), quorum=quorum, data_dir=data, replicas=replicas,
                min_insync=min(2, replicas), security=security.substitute(places), **places,
            )
        )  # fmt: skip
        logs = self.home / "log"
        logs.mkdir(parents=True, exist_ok=True)
        classpath = f"{lib}/*"
        log4j = f"-Dlog4j2.configurationFile={FILES / 'log4j2.properties'}"
        secured = self.home / SECURED
        stamp = hashlib.sha256(admin_password.encode()).hexdigest()[:16]
        if (data / "meta.properties").exists() and (not secured.exists() or secured.read_text().strip() != stamp):
            self.say(f"[{self.name}] its storage predates these credentials: formatting it again (local data only)")
            shutil.rmtree(data)
        if not (data / "meta.properties").exists():
            self.say(f"[{self.name}] formatting KRaft storage (with the admin's SCRAM-SHA-512 credential)")
            if cluster_id is None:
                cluster_id = run_command(
                    [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"], what="kafka random-uuid"
                ).stdout.strip()
            standalone = [] if self.node_id else ["--standalone"]
            # The arguments, the admin's password among them, go through a Java @argfile (0600),
            # never onto the command line where `ps` would show them.
            argfile = private_file(self.home / "format.args")
            arguments = ["kafka.tools.StorageTool", "format", *standalone, "-t", cluster_id, "-c", str(config),
                         "--add-scram", f"{credentials.MECHANISM}=[name=admin,password={admin_password}]"]  # fmt: skip
            argfile.write_text("\n".join(java_quoted(argument) for argument in arguments) + "\n")
            try:
                run_command(
                    [java, "-cp", classpath, log4j, f"-Dkafka.logs.dir={logs}", f"@{argfile}"],
                    what="kafka storage format",
                )
            finally:
                argfile.unlink(missing_ok=True)
            secured.write_text(stamp + "\n")
        self.say(f"[{self.name}] starting broker on {host}:{port}")
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

    def admin_settings(self) -> Settings:
        """The settings with the admin's credentials, for probing this node (none for an open one)."""
        if self.open:
            return self.settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
        return credentials.as_principal(self.settings, "admin")

    def random_cluster_id(self) -> str:
        """A new KRaft cluster id (one for every node of a cluster)."""
        java, lib = self._java(), self.jars()
        return run_command(
            [java, "-cp", f"{lib}/*", "kafka.tools.StorageTool", "random-uuid"], what="kafka random-uuid"
        ).stdout.strip()

    def cluster_id(self) -> str | None:
        """The cluster id this node's storage was formatted with, if it was."""
        meta = self.home / "data" / "meta.properties"
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    def metadata_ok(self) -> bool:
        """True once the broker answers a metadata request (not merely an open port)."""
        if self.exited_early():
            raise StackError(
                f"{self.name} exited during start-up; see {self.log_file} and {self.home / 'log/server.log'}"
            )
        host, port = self.host_port()
        if not port_open(host, port):
            return False
        from aiokafka.admin import AIOKafkaAdminClient

        from shared.runtime.broker import aiokafka_options

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(
                **aiokafka_options(self.admin_settings().model_copy(update={"kafka_bootstrap": f"{host}:{port}"})),
                request_timeout_ms=3000,
            )
            try:
                await admin.start()
                await admin.list_topics()
                return True
            except Exception:
                return False
            finally:
                await admin.close()

        return asyncio.run(probe())


class KafkaCluster(Component):
    """The local stack's Kafka nodes as one component: every node started before any is waited
    for (a controller quorum of three needs two), stopped together."""

    marker = "kafka.Kafka"

    def __init__(self, name: str, settings: Settings, say: Say) -> None:
        super().__init__(name, settings, say)
        self.nodes = nodes(settings, say)

    def host_port(self) -> tuple[str, int]:
        return self.nodes[0].host_port()

    def address(self) -> str:
        return ", ".join(node.address() for node in self.nodes)

    def pid(self) -> int | None:
        pids = [node.pid() for node in self.nodes]
        return pids[0] if all(pids) else None

    def pids(self) -> dict[str, int | None]:
        """Each node's pid (None: not running)."""
        return {node.name: node.pid() for node in self.nodes}

    def start(self) -> None:
        if len(self.nodes) == 1:
            self.nodes[0].start()
            return
        self.nodes[0].jars()
        cluster_id = next(filter(None, (node.cluster_id() for node in self.nodes)), None)
        cluster_id = cluster_id or self.nodes[0].random_cluster_id()
        for node in self.nodes:
            if not node.running():
                node.home.mkdir(parents=True, exist_ok=True)
                node.spawn_node(cluster_id)
        for node in self.nodes:
            wait_until(f"{node.name} metadata", node.metadata_ok, timeout=120, say=self.say, log=node.log_file)
        announce_users(self.settings, self.say)

    def stop(self) -> bool:
        """Stop every Kafka node the stack folder holds, whatever the settings say now (a cluster
        started with `--brokers 3` is stopped by a plain `stack down`)."""
        found = {node.name: node for node in self.nodes}
        for home in sorted(self.settings.stack_dir.resolve().glob("kafka-*")):
            if home.is_dir() and home.name not in found:
                index = home.name.removeprefix("kafka-")
                found[home.name] = Kafka(
                    home.name, self.settings, self.say, node_id=int(index) if index.isdigit() else 1
                )
        stopped = [node.stop() for node in reversed(list(found.values()))]
        return any(stopped)


def announce_users(settings: Settings, say: Say) -> None:
    """Make sure of every principal's SCRAM credential on a cluster that just started, and say so."""
    users = ensure_users(settings)
    say(f"[kafka] SCRAM-SHA-512 principals: admin, {', '.join(users)} (passwords in {settings.credentials_dir})")


def ensure_users(settings: Settings) -> list[str]:
    """Give every principal but the admin (made when the storage was formatted) its SCRAM-SHA-512
    credential from the local stack's credentials, as the admin; returns the principals."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    from shared.runtime.broker import admin_config

    passwords = credentials.ensure(settings)
    admin = AdminClient(admin_config(credentials.as_principal(settings, "admin")))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(name, info, password.encode())
        for name, password in passwords.items()
        if name != "admin"
    ]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(timeout=30)
    return [upsert.user for upsert in upserts]
