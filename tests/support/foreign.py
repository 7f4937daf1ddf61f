"""Producing the way a producer in another language does: Kafka's own console producer (Java),
connecting as the local stack's outside `producer` principal with its client configuration file,
writing raw bytes and our CloudEvents headers."""

from __future__ import annotations

import shutil
import subprocess

from shared.ops import credentials
from shared.ops.kafka import Kafka
from shared.runtime.settings import Settings


def console_produce(settings: Settings, topic: str, key: str, body: str, headers: dict[str, str]) -> None:
    """One message to the full topic name `topic`, as `kafka-console-producer` sends it."""
    java = shutil.which("java")
    assert java, "Java is needed for Kafka's console producer (scripts/bootstrap.sh installs it)"
    lib = Kafka("kafka", settings, print).jars()
    config = credentials.client_properties(settings, "producer")
    line = ",".join(f"{name}:{value}" for name, value in headers.items()) + f"\t{key}\t{body}\n"
    command = [
        java, "-cp", f"{lib}/*", "-Dlog4j2.level=warn", "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server", settings.kafka_bootstrap, "--topic", topic, "--producer.config", str(config),
        "--property", "parse.key=true", "--property", "parse.headers=true",
    ]  # fmt: skip
    done = subprocess.run(command, input=line, text=True, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, f"kafka-console-producer failed: {done.stderr[-2000:]}"
