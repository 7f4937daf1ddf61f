"""The local stack's credentials: generated once per installation (never a default) under
`Settings.credentials_dir` (folders 0700, files 0600): a Kafka password per principal and the S3
server's key. Processes get them as `MODELBUS_*_FILE` variables, so no secret travels on a
command line.

`stack up` makes them; `modelbus up` gives each service its own principal; the CLI, the tests
and the benchmarks adopt a principal with `adopt` when nothing else names one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from shared.contract.topics import PRINCIPALS, Principal
from shared.runtime.settings import Settings, get_settings

KAFKA = "kafka"
S3 = "s3"
MECHANISM = "SCRAM-SHA-512"
PROTOCOL = "SASL_PLAINTEXT"
# The variables `principal_env` sets: a process started for another principal inherits none.
VARIABLES = frozenset(
    {
        "MODELBUS_KAFKA_SECURITY_PROTOCOL",
        "MODELBUS_KAFKA_SASL_MECHANISM",
        "MODELBUS_KAFKA_SASL_USERNAME",
        "MODELBUS_KAFKA_SASL_PASSWORD",
        "MODELBUS_KAFKA_SASL_PASSWORD_FILE",
        "MODELBUS_S3_ACCESS_KEY_ID_FILE",
        "MODELBUS_S3_SECRET_ACCESS_KEY_FILE",
    }
)


def kafka_password_file(settings: Settings, principal: Principal) -> Path:
    """Where the Kafka password of `principal` is kept."""
    return settings.credentials_dir.resolve() / KAFKA / principal


def s3_key_files(settings: Settings) -> tuple[Path, Path]:
    """Where the S3 server's access key id and secret key are kept."""
    folder = settings.credentials_dir.resolve() / S3
    return folder / "access-key-id", folder / "secret-access-key"


def _secret_file(path: Path, make: str) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        # Opened 0600 from the start: the secret is never readable by others, not even briefly.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(make + "\n")
    return path.read_text().strip()


def ensure(settings: Settings) -> dict[Principal, str]:
    """Make the credentials this installation lacks (every principal's Kafka password, the S3
    server's key); returns the Kafka passwords."""
    settings.credentials_dir.mkdir(parents=True, exist_ok=True)
    settings.credentials_dir.chmod(0o700)
    key_id, secret_key = s3_key_files(settings)
    _secret_file(key_id, f"modelbus-{secrets.token_hex(8)}")
    _secret_file(secret_key, secrets.token_urlsafe(32))
    return {p: _secret_file(kafka_password_file(settings, p), secrets.token_urlsafe(32)) for p in PRINCIPALS}


def client_properties(
    settings: Settings, principal: Principal, *, flavor: Literal["java", "librdkafka"] = "java"
) -> Path:
    """A Kafka client configuration that connects to the local stack as `principal`, written 0600
    since it holds the password: Java's (`--producer.config` of Kafka's console tools, Kafka
    Connect, Spring) as `<principal>.properties`, or librdkafka's (confluent-kafka in Python, Go,
    .NET; kcat built on librdkafka 2.6.1 or newer, the first to do SCRAM with Kafka 4) as
    `<principal>.librdkafka.properties`."""
    password = kafka_password_file(settings, principal).read_text().strip()
    lines = [f"bootstrap.servers={settings.kafka_bootstrap}", f"security.protocol={PROTOCOL}"]
    if flavor == "java":
        path = settings.credentials_dir.resolve() / f"{principal}.properties"
        lines += [
            f"sasl.mechanism={MECHANISM}",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{principal}" password="{password}";',
        ]
    else:
        path = settings.credentials_dir.resolve() / f"{principal}.librdkafka.properties"
        lines += [f"sasl.mechanisms={MECHANISM}", f"sasl.username={principal}", f"sasl.password={password}"]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def present(settings: Settings) -> bool:
    """Whether the local stack's credentials exist (the stack was brought up here)."""
    files = [*s3_key_files(settings), *(kafka_password_file(settings, p) for p in PRINCIPALS)]
    return all(path.is_file() for path in files)


def principal_env(settings: Settings, principal: Principal, *, kafka: bool = True) -> dict[str, str]:
    """The environment that makes a process use the local stack as `principal`: its Kafka
    credentials (unless `kafka` is false: a broker without authentication) and the S3 key, each
    through a file."""
    key_id, secret_key = s3_key_files(settings)
    found = {"MODELBUS_S3_ACCESS_KEY_ID_FILE": str(key_id), "MODELBUS_S3_SECRET_ACCESS_KEY_FILE": str(secret_key)}
    if kafka:
        found |= {
            "MODELBUS_KAFKA_SECURITY_PROTOCOL": PROTOCOL,
            "MODELBUS_KAFKA_SASL_MECHANISM": MECHANISM,
            "MODELBUS_KAFKA_SASL_USERNAME": principal,
            "MODELBUS_KAFKA_SASL_PASSWORD_FILE": str(kafka_password_file(settings, principal)),
        }
    return found


def as_principal(settings: Settings, principal: Principal) -> Settings:
    """`settings` using the local stack as `principal`."""
    key_id, secret_key = s3_key_files(settings)
    return settings.model_copy(
        update={
            "kafka_security_protocol": PROTOCOL,
            "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": principal,
            "kafka_sasl_password": SecretStr(kafka_password_file(settings, principal).read_text().strip()),
            "s3_access_key_id": key_id.read_text().strip(),
            "s3_secret_access_key": SecretStr(secret_key.read_text().strip()),
        }
    )


def local(settings: Settings, principal: Principal) -> Settings:
    """`settings` as `principal` when the local stack's credentials exist, else unchanged (a
    platform of your own, configured through the environment)."""
    return as_principal(settings, principal) if present(settings) else settings


def adopt(principal: Principal) -> bool:
    """This process (and what it starts) connects as the local stack's `principal`, unless the
    environment already names Kafka credentials or the stack has none; True if adopted."""
    if os.environ.get("MODELBUS_KAFKA_SASL_USERNAME") or os.environ.get("MODELBUS_KAFKA_SECURITY_PROTOCOL"):
        return False
    settings = Settings()
    if not present(settings):
        return False
    os.environ.update(principal_env(settings, principal))
    get_settings.cache_clear()
    return True
