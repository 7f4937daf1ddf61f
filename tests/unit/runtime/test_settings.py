from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.runtime.settings import Settings, SettingsFileError, secret_variable


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


def test_secrets_come_from_files_as_kubernetes_mounts_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("t9=operator:ci\n")
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "MODELBUS_S3_SECRET_ACCESS_KEY").write_text("from-the-folder\n")
    (folder / "modelbus_database_password").write_text("p@ss/word")
    (folder / "PAGERDUTY_ROUTING_KEY").write_text("R" * 32 + "\n")
    monkeypatch.setenv("MODELBUS_API_TOKENS_FILE", str(tmp_path / "tokens"))
    monkeypatch.setenv("MODELBUS_SECRETS_DIR", str(folder))
    settings = Settings()
    assert settings.principals() == {"t9": ("operator", "ci")}
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "from-the-folder"
    assert settings.database_url == "postgresql+asyncpg://modelbus:p%40ss%2Fword@127.0.0.1:5432/modelbus"
    assert secret_variable("PAGERDUTY_ROUTING_KEY") == "R" * 32
    monkeypatch.setenv("MODELBUS_API_TOKENS", "t1=viewer")
    assert Settings().tokens() == {"t1": "viewer"}, "the variable itself wins over its file"
    assert "p@ss/word" not in repr(Settings()) and "from-the-folder" not in repr(Settings())


def test_an_unreadable_secret_file_is_named_without_its_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELBUS_API_TOKENS_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsFileError, match=r"MODELBUS_API_TOKENS_FILE: cannot read .*missing"):
        Settings()
    monkeypatch.setenv("HOOK_SECRET_FILE", str(tmp_path / "gone"))
    with pytest.raises(SettingsFileError, match="HOOK_SECRET_FILE"):
        secret_variable("HOOK_SECRET")
