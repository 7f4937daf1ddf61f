"""Typed settings of every modelbus process, read from MODELBUS_* environment variables.

Any setting may instead come from a file, as Kubernetes Secrets and Vault Agent mount them: the
file that `MODELBUS_<NAME>_FILE` names, or `<NAME>` in the folder `MODELBUS_SECRETS_DIR` names
(`MODELBUS_API_TOKENS`, any case). The variable itself wins over its file, and the `_FILE`
variable over the folder. A file's trailing newline is not part of the value.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

Role = Literal["viewer", "operator", "admin"]
PREFIX = "MODELBUS_"
SECRETS_DIR = "MODELBUS_SECRETS_DIR"


class SettingsFileError(ValueError):
    """A `MODELBUS_<NAME>_FILE` variable names a file that cannot be read."""


def read_secret_file(variable: str, path: str) -> str:
    """The content of a secret's file, without its trailing newline; a readable error naming the
    variable and the path (never the content) when it cannot be read."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise SettingsFileError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def secret_variable(name: str) -> str | None:
    """A secret a configuration names by its variable (a receiver's key, a signing secret): the
    variable `name`, else the file `<name>_FILE` names, else `<name>` in MODELBUS_SECRETS_DIR."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return read_secret_file(f"{name}_FILE", path)
    folder = os.environ.get(SECRETS_DIR)
    if folder and (Path(folder) / name).is_file():
        return read_secret_file(SECRETS_DIR, str(Path(folder) / name))
    return None


class FileVariables(PydanticBaseSettingsSource):
    """Settings read from the files that MODELBUS_<NAME>_FILE variables name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        return (read_secret_file(variable, path) if path else None), field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                found[key] = value
        return found


class Settings(BaseSettings):
    """Configuration of one modelbus process; every field is MODELBUS_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first, then MODELBUS_<NAME>_FILE, the .env file, MODELBUS_SECRETS_DIR."""
        sources = [init_settings, env_settings, FileVariables(settings_cls), dotenv_settings]
        folder = os.environ.get(SECRETS_DIR)
        if folder:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=folder, case_sensitive=False))
        return tuple(sources)

    # Kafka bootstrap servers, comma-separated host:port.
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL mechanism when the protocol is SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    # SASL user name; unset, a service is <kafka_user_prefix><its principal> (modelbus-registry).
    kafka_sasl_username: str | None = None
    # Prefix of the platform's Kafka user names: principal registry is user <prefix>registry, in ACLs too.
    kafka_user_prefix: str = ""
    # SASL password.
    kafka_sasl_password: SecretStr | None = None
    # CA bundle (PEM) that signs the brokers' certificates, for SSL and SASL_SSL.
    kafka_ssl_cafile: Path | None = None
    # Prefix of every topic name: <prefix>.<event-name>.
    topic_prefix: str = "modelbus"
    # Replication factor of topics the platform creates (1 on the local stack, 3 in production).
    topic_replication_factor: int = Field(default=1, ge=1)
    # Largest event body accepted or produced, in bytes.
    max_message_bytes: int = 1_048_576

    # SQLAlchemy URL of the database (async driver).
    database_url: str = "postgresql+asyncpg://modelbus:modelbus@127.0.0.1:5432/modelbus"
    # PostgreSQL schema of this platform's tables (platforms sharing a database each have one); empty: public.
    database_schema: str = Field(default="", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    # Password of the database user; when set it replaces the one in database_url (keep the URL free of it).
    database_password: SecretStr | None = None

    # Where artifacts are written: s3://bucket/prefix or file:///absolute/root.
    artifact_url: str = "s3://modelbus-artifacts/artifacts"
    # Extra roots that file:// URIs may point into (datasets), besides the artifact root.
    file_roots: list[Path] = Field(default_factory=list)
    # S3 endpoint URL; empty means AWS's own.
    s3_endpoint_url: str | None = "http://127.0.0.1:9000"
    # S3 region.
    s3_region: str = "us-east-1"
    # S3 access key id (no default: unset, boto3's own chain, e.g. an IAM role; the local stack generates one).
    s3_access_key_id: str | None = None
    # S3 secret access key (no default, like the key id).
    s3_secret_access_key: SecretStr | None = None
    # Buckets that s3:// URIs may name, besides the artifact bucket.
    s3_allowed_buckets: list[str] = Field(default_factory=list)

    # OTLP/HTTP traces endpoint (…/v1/traces is appended); empty disables export.
    otlp_endpoint: str | None = "http://127.0.0.1:4318"
    # Jaeger's query API (the local stack's Jaeger); the demo prints trace links on it.
    trace_query_url: str = "http://127.0.0.1:16686"
    # Prometheus's HTTP API (the local stack's Prometheus, scraping every process); the console's charts query it.
    prometheus_url: str = "http://127.0.0.1:9090"
    # Name this process reports in traces, logs and CloudEvents ce_source.
    service_name: str = "modelbus"
    # Log level of the service's JSON logs.
    log_level: str = "INFO"

    # API bearer tokens: TOKEN=ROLE[@WORKSPACE][:NAME], comma-separated; no WORKSPACE: every one; NAME is audited.
    api_tokens: SecretStr = SecretStr("")
    # Whether the APIs accept api_tokens at all (false: only the OpenID Connect provider's tokens; break-glass: true).
    static_tokens: bool = True
    # OpenID Connect issuer whose JWT access tokens the APIs accept (its discovery document and keys); empty: none.
    oidc_issuer: str = ""
    # The audience an access token must name (`aud`): the client id the provider issues them for.
    oidc_audience: str = "modelbus"
    # The token claim listing the caller's groups.
    oidc_groups_claim: str = "groups"
    # Roles the provider's groups and users have: GROUP=ROLE[@WORKSPACE] or user:NAME=ROLE[@WORKSPACE], comma-separated.
    oidc_roles: str = ""
    # The console's OAuth client at the provider (authorization code with PKCE); empty: oidc_audience.
    oidc_client_id: str = ""
    # The console client's secret, for a provider that keeps it confidential; empty: a public client.
    oidc_client_secret: SecretStr = SecretStr("")
    # Largest request body the registry and alerter APIs accept, in bytes (serving has its own).
    api_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Largest model import (model file or archive plus reference and test rows), in bytes.
    import_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # Every HTTP listener: seconds a client has to send a request's line and headers, from its first byte.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Every HTTP listener: seconds a client has to send a request's body once its headers are in.
    http_body_timeout_seconds: float = Field(default=20.0, gt=0)
    # Every HTTP listener: the body's time grows a second per this many bytes received (a fair upload is never cut).
    http_body_min_rate_bytes: int = Field(default=500, ge=1)
    # Every HTTP listener: seconds an idle keep-alive connection stays open.
    http_idle_timeout_seconds: int = Field(default=5, ge=1)
    # Every HTTP listener: most open connections and requests in flight; beyond it new requests get 503.
    http_max_connections: int = Field(default=1000, ge=1)
    # Address the registry's HTTP API listens on.
    registry_host: str = "127.0.0.1"
    # Port of the registry's HTTP API.
    registry_port: int = Field(default=8080, ge=1, le=65535)
    # Registry API the CLI talks to.
    api_url: str = "http://127.0.0.1:8080"
    # Bearer token the CLI sends to the registry API.
    api_token: SecretStr = SecretStr("")

    # Attempts of a handler on transient errors before its message is dead-lettered.
    handler_max_attempts: int = Field(default=5, ge=1)
    # First backoff between handler attempts, in seconds; it doubles each time.
    handler_backoff_seconds: float = Field(default=0.2, gt=0)
    # Most messages a consumer handles in one database transaction (one offset commit).
    consumer_batch_max: int = Field(default=200, ge=1, le=10_000)
    # A consumer's wait for new messages per poll, in ms; after an empty poll it pauses as long (so keep it short).
    consumer_poll_ms: int = Field(default=25, ge=1, le=1000)
    # How often the outbox relay looks for unpublished events, in seconds.
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    # How long a consumer group remembers a handled ce_id (inbox), in seconds; keep it above the topics' retention.
    inbox_retention_seconds: float = Field(default=8 * 86_400, gt=0)
    # How long a published outbox row is kept, in seconds.
    outbox_retention_seconds: float = Field(default=86_400, gt=0)
    # How often a service deletes what outlived those retentions, in seconds.
    retention_sweep_seconds: float = Field(default=600, gt=0)

    # Lease of a training job, in seconds: a trainer that stops renewing it (killed) loses the job to another.
    trainer_lease_seconds: float = Field(default=60, gt=0)
    # Attempts of a training job on transient failures (data or artifact store away) before TrainingFailed.
    trainer_max_attempts: int = Field(default=3, ge=1)
    # Dask scheduler (tcp://host:port) on which a search's cross-validation fits run; unset: in the trainer.
    trainer_dask_scheduler: str | None = None
    # Cross-validation fits at once in the trainer when no Dask scheduler is set; 0: one per CPU core.
    trainer_n_jobs: int = Field(default=0, ge=0, le=512)
    # Feast feature repo (its feature_store.yaml) for specs that name Feast features; `modelbus feast apply` fills it.
    feast_repo: Path = Path(".modelbus/feast")
    # Password of the Feast repo's PostgreSQL stores (feature_store.yaml: ${MODELBUS_FEAST_POSTGRES_PASSWORD}).
    feast_postgres_password: SecretStr | None = None
    # How often the deployer materializes the Feast repo's views into the online store, in seconds; 0: never.
    feast_materialize_seconds: float = Field(default=300.0, ge=0)
    # MLflow tracking server the trainer mirrors its runs and versions to (http://host:5000); unset: no mirror.
    mlflow_tracking_uri: str | None = None
    # How long the mirror retries an MLflow server that is down before it gives up on a run, in seconds.
    mlflow_retry_seconds: float = Field(default=300, gt=0)

    # Address serving (python -m services.deployer.serving) listens on.
    serving_host: str = "127.0.0.1"
    # Port of serving's HTTP API.
    serving_port: int = Field(default=8081, ge=1, le=65535)
    # Models this serving process serves, comma-separated; empty serves every model with a rollout.
    serving_models: str = ""
    # Most rows one request may carry.
    serving_max_rows: int = Field(default=1000, ge=1, le=100_000)
    # Largest request body serving accepts, in bytes.
    serving_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Most rows of concurrent requests predicted together in one model call.
    serving_batch_rows: int = Field(default=256, ge=1, le=100_000)
    # How often serving re-reads the rollouts besides reacting to RolloutChanged, in seconds.
    serving_refresh_seconds: float = Field(default=30, gt=0)
    # This process's shard of the models, i/n (a stable hash of the model name); empty: every model.
    serving_shard: str = ""
    # Native threads a model's call may use in serving, the evaluator's sandbox and the trainer's
    # checks of its candidates (OpenMP, BLAS); requests run in parallel across processes, not inside
    # one call, and batches of 1,000 rows or more use every core. 0: the libraries' defaults.
    model_threads: int = Field(default=1, ge=0, le=256)
    # Memory for resident versions, in bytes; versions no rollout routes to are evicted beyond it (LRU).
    serving_memory_bytes: int = Field(default=4 * 1024**3, ge=1024**2)
    # Bearer tokens for predict, infer and metadata (TOKEN[:NAME], comma-separated); empty: no auth.
    serving_tokens: SecretStr = SecretStr("")
    # Model POST /invocations answers for when this process serves several; empty: the only one.
    serving_default_model: str = ""
    # Whether serving scores its models' input topics (`<prefix>.inputs.<model>`) into their output
    # topics in Kafka transactions, creating both when a model goes live.
    serving_streams: bool = True
    # This replica's name in its scorer's transactional id (`<prefix>.scorer.<replica>`): stable
    # across restarts (a pod's name in a StatefulSet), so a restarted scorer fences its former self
    # and aborts what it left open. Empty: the host name and the port.
    serving_replica: str = ""
    # Most input messages a scorer reads, scores and commits in one transaction.
    stream_batch_messages: int = Field(default=500, ge=1, le=100_000)
    # A scorer's transaction timeout in milliseconds: how long a transaction a killed scorer left
    # open holds back read-committed consumers when no scorer of its name comes back.
    stream_transaction_timeout_ms: int = Field(default=10_000, ge=1_000, le=900_000)
    # Predictions buffered for PredictionsLogged; beyond it new ones are dropped (and counted).
    prediction_log_capacity: int = Field(default=50_000, ge=1)
    # Most predictions in one PredictionsLogged event.
    prediction_log_batch: int = Field(default=500, ge=1, le=10_000)
    # Longest a prediction waits in the buffer before its batch is published, in seconds.
    prediction_log_flush_seconds: float = Field(default=1.0, gt=0)

    # How long the monitor keeps served predictions for labels to join (the label horizon); a label
    # for an older answer is counted expired.
    monitor_label_horizon_seconds: float = Field(default=7 * 86_400, gt=0)
    # How long a label that came before its answer waits for it; then it is counted unknown (no such
    # answer) or misdirected (answered for another model). Unset: the label horizon.
    monitor_label_wait_seconds: float | None = Field(default=None, gt=0)

    # Address of a service's /healthz, /readyz and /metrics (trainer, evaluator, deployer, monitor).
    health_host: str = "127.0.0.1"
    # Port of those routes; 0: none (the registry, serving and alerter answer them on their own API).
    health_port: int = Field(default=0, ge=0, le=65535)

    # Address the alerter's HTTP API listens on.
    alerter_host: str = "127.0.0.1"
    # Port of the alerter's HTTP API (alerts, acknowledgements, silences).
    alerter_port: int = Field(default=8082, ge=1, le=65535)
    # Alerter API the CLI and the console talk to (`modelbus alerts`, the console's alerts page).
    alerter_url: str = "http://127.0.0.1:8082"
    # Monitor API the console reads the window history from (the monitor's health port).
    monitor_url: str = "http://127.0.0.1:8086"
    # Address the console (the web UI, `python -m shared.ops.console`) listens on.
    console_host: str = "127.0.0.1"
    # Port of the console.
    console_port: int = Field(default=8087, ge=1, le=65535)
    # Where people open the console; the alerter's links point into it.
    console_url: str = "http://127.0.0.1:8087/ui"
    # The alerter's routing, receivers and inhibition rules (YAML); empty: one receiver, the alerts topic and the log.
    alerter_config: Path | None = None
    # How often the alerter flushes due groups and sends pending notifications, in seconds.
    alerter_tick_seconds: float = Field(default=1.0, gt=0)
    # Longest wait between two delivery attempts of a notification, in seconds (the wait doubles up to it).
    alerter_retry_max_seconds: float = Field(default=60.0, gt=0)

    # Folder of secret files, one per setting named as its variable (MODELBUS_API_TOKENS): a mounted Secret.
    secrets_dir: Path | None = None

    # Folder of the local stack's data, downloads, logs and pids.
    stack_dir: Path = Path(".modelbus")
    # Folder of the local stack's generated credentials (mode 0700), one password file per Kafka principal.
    credentials_dir: Path = Path(".modelbus/credentials")

    @field_validator("alerter_config", "secrets_dir", "trainer_dask_scheduler", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("serving_shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        from shared.contract.sharding import parse_shard

        parse_shard(value)
        return value.strip()

    @field_validator("artifact_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in ("s3", "file"):
            raise ValueError(f"artifact_url must start with s3:// or file://, not {scheme or 'nothing'}://")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("database_url must use the async driver: postgresql+asyncpg://…")
        return value

    @model_validator(mode="after")
    def _database_password(self) -> Settings:
        if self.database_password is not None:
            url = urlparse(self.database_url)
            user = url.username or ""
            host = url.hostname or ""
            host = f"[{host}]" if ":" in host else host
            port = f":{url.port}" if url.port else ""
            secret = quote(self.database_password.get_secret_value(), safe="")
            netloc = f"{quote(user, safe='')}:{secret}@{host}{port}"
            self.database_url = url._replace(netloc=netloc).geturl()
        return self

    def kafka_servers(self) -> list[str]:
        """The bootstrap servers as a list (FastStream takes a comma-separated string as one host)."""
        return [server.strip() for server in self.kafka_bootstrap.split(",") if server.strip()]

    def topic(self, name: str) -> str:
        """The full Kafka topic name of a catalog entry (see shared.contract.topics)."""
        return f"{self.topic_prefix}.{name}"

    def tokens(self) -> dict[str, Role]:
        """Parse api_tokens into {token: role}."""
        return {token: role for token, (role, _) in self.principals().items()}

    def serving_principals(self) -> dict[str, str]:
        """Parse serving_tokens into {token: caller name}; an unnamed token's caller is token-<digest>."""
        pairs: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.serving_tokens.get_secret_value().split(","))):
            token, _, name = item.partition(":")
            pairs[token] = name or f"token-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
        return pairs

    def principals(self) -> dict[str, tuple[Role, str]]:
        """Parse api_tokens into {token: (role, actor name)}; an unnamed token's actor is ROLE-<digest>."""
        return {token: (role, actor) for token, (role, actor, _) in self.static_grants().items()}

    def static_grants(self) -> dict[str, tuple[Role, str, str]]:
        """Parse api_tokens into {token: (role, actor name, workspace)}: `TOKEN=ROLE[@WORKSPACE][:NAME]`,
        the workspace `*` (every one) when none is named."""
        pairs: dict[str, tuple[Role, str, str]] = {}
        for item in filter(None, (p.strip() for p in self.api_tokens.get_secret_value().split(","))):
            token, sep, grant = item.rpartition("=")
            scoped, _, name = grant.partition(":")
            role, _, workspace = scoped.partition("@")
            if not sep or role not in ("viewer", "operator", "admin") or not token:
                raise ValueError("api_tokens entries must look like TOKEN=viewer|operator|admin[@WORKSPACE][:NAME]")
            actor = name or f"{role}-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
            pairs[token] = (role, actor, workspace or "*")  # type: ignore[assignment]
        return pairs


def documented() -> list[tuple[str, str, str]]:
    """(environment variable, default, the comment above the field) for every setting."""
    import inspect
    import re

    comments: dict[str, str] = {}
    pending = ""
    for line in inspect.getsource(Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("# "):
            pending = stripped[2:]
        elif (match := re.match(r"^(\w+):", stripped)) and pending:
            comments[match.group(1)] = pending
            pending = ""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if hasattr(default, "get_secret_value"):
            default = "(secret)" if default.get_secret_value() else ""
        elif isinstance(default, str) and (password := urlparse(default).password):
            default = default.replace(f":{password}@", ":***@", 1)  # a URL's password is a secret too
        rows.append((f"MODELBUS_{name.upper()}", "" if default is None else str(default), comments.get(name, "")))
    return rows


def markdown_table() -> str:
    """The configuration table (`modelbus config`, the docs' configuration reference)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [
        f"| `{name}` | `{default}` | {meaning} |" if default else f"| `{name}` | | {meaning} |"
        for name, default, meaning in documented()
    ]
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
