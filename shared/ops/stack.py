"""The local stack without Docker: Apache Kafka (KRaft, from Maven; one node, or three with
`--brokers 3`), PostgreSQL (OS packages),
an S3-compatible server (rclone serve s3), Jaeger v2 (traces) and Prometheus (metrics), and with
`--oidc` an OpenID Connect provider (Keycloak, shared.ops.identity), all on 127.0.0.1.

State lives under `Settings.stack_dir`: downloads, data, logs and one pid file per component.
`up` is idempotent, `down` stops exactly what `up` started, `status` shows each component.
"""

from __future__ import annotations

import asyncio
import time

from shared.ops import credentials
from shared.ops.components import Component, Postgres, S3Server, Say, StackError
from shared.ops.identity import Identity
from shared.ops.kafka import KafkaCluster
from shared.ops.observability import Metrics, Traces
from shared.runtime.settings import Settings

__all__ = ["StackError", "components", "down", "status", "up"]


def components(settings: Settings, say: Say, *, oidc: bool | None = None) -> list[Component]:
    """The stack's components, in start order; the OpenID Connect provider when `oidc` (None: when
    it runs)."""
    found: list[Component] = [
        Postgres("postgres", settings, say),
        S3Server("s3", settings, say),
        Traces("traces", settings, say),
        KafkaCluster("kafka", settings, say),
        Metrics("metrics", settings, say),
    ]
    provider = Identity("oidc", settings, say)
    if oidc or (oidc is None and provider.running()):
        found.append(provider)
    return found


def up(settings: Settings, say: Say = print, *, oidc: bool = False) -> None:
    """Start what is not running, then make sure topics, bucket and schema exist."""
    started = time.monotonic()
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    for component in components(settings, say, oidc=oidc or None):
        if component.running():
            say(f"[{component.name}] already running (pid {component.pid()}) at {component.address()}")
            continue
        component.home.mkdir(parents=True, exist_ok=True)
        step = time.monotonic()
        component.start()
        say(f"[{component.name}] ready at {component.address()} ({time.monotonic() - step:.1f} s)")
    from shared.runtime.broker import ensure_acls, ensure_topics

    admin = credentials.as_principal(settings, "admin")
    created, existing = asyncio.run(ensure_topics(admin, acls=False))
    say(f"[topics] {len(created)} created, {len(existing)} already there (prefix {settings.topic_prefix})")
    say(f"[acls] {asyncio.run(ensure_acls(admin))} ACLs from the contract's producer/consumer table")
    java = credentials.client_properties(settings, "producer")
    librdkafka = credentials.client_properties(settings, "producer", flavor="librdkafka")
    say(f"[kafka] outside producers connect as `producer`: {java} (Java clients), {librdkafka.name} (librdkafka)")
    readers = credentials.client_properties(settings, "consumer")
    credentials.client_properties(settings, "consumer", flavor="librdkafka")
    say(f"[kafka] outside readers of predictions connect as `consumer`: {readers}")
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
