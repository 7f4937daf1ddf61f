from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.runtime.settings import Settings


def test_environment_variables_configure_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBUS_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("MODELBUS_TOPIC_PREFIX", "acme")
    monkeypatch.setenv("MODELBUS_ARTIFACT_URL", "file:///var/lib/modelbus")
    monkeypatch.setenv("MODELBUS_FILE_ROOTS", '["/data"]')
    monkeypatch.setenv("MODELBUS_API_TOKENS", "t1=viewer,t2=operator")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.topic("data-arrived") == "acme.data-arrived"
    assert str(settings.file_roots[0]) == "/data"
    assert settings.tokens() == {"t1": "viewer", "t2": "operator"}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("MODELBUS_ARTIFACT_URL", "http://bucket/x", "artifact_url must start with s3:// or file://"),
        ("MODELBUS_DATABASE_URL", "postgresql://u:p@h/db", "async driver"),
        ("MODELBUS_KAFKA_SECURITY_PROTOCOL", "TLS", "kafka_security_protocol"),
        ("MODELBUS_HANDLER_MAX_ATTEMPTS", "0", "handler_max_attempts"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert fragment in str(caught.value)


def test_malformed_api_tokens_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBUS_API_TOKENS", "t1=root")
    with pytest.raises(ValueError, match="TOKEN=viewer"):
        Settings().tokens()
