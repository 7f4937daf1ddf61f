"""The CLI on the machine that runs the local platform uses its admin token when no
MODELBUS_API_TOKEN is set, as the README's `modelbus models ls` after `make demo` expects."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from shared.ops.cli.app import local_token
from shared.runtime.settings import Settings


def test_the_local_platforms_token_is_used_only_where_it_was_made_and_no_tokens_are_configured(tmp_path: Path) -> None:
    settings = Settings(stack_dir=tmp_path, api_tokens=SecretStr(""))
    assert local_token(settings) == "", "no local platform here"
    (tmp_path / "console-token").write_text("s3cret-local\n")
    assert local_token(settings) == "s3cret-local"
    configured = settings.model_copy(update={"api_tokens": SecretStr("t=operator:otto")})
    assert local_token(configured) == "", "a platform with configured tokens gets no local admin"
