"""The local stack's Apache Kafka: KRaft, one combined broker and controller, from its Maven artifacts."""

from __future__ import annotations

import asyncio
import shutil
import string
import subprocess
import time
from pathlib import Path

from shared.ops.components import FILES, Component, StackError, port_open, run_command, wait_until


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
            cluster = run_command(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"], what="kafka random-uuid"
            )
            run_command(
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
        wait_until("Kafka metadata", self.metadata_ok, timeout=90, say=self.say, log=self.log_file)

    def metadata_ok(self) -> bool:
        """True once the broker answers a metadata request (not merely an open port)."""
        if self.exited_early():
            raise StackError(f"Kafka exited during start-up; see {self.log_file} and {self.home / 'log/kafka.log'}")
        host, port = self.host_port()
        if not port_open(host, port):
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
