"""Unit tests read settings from what each test sets alone, not from the local stack's
credentials that the test process adopted (tests/conftest.py)."""

from __future__ import annotations

import pytest

from shared.ops import credentials


@pytest.fixture(autouse=True)
def _no_local_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in credentials.VARIABLES:
        monkeypatch.delenv(variable, raising=False)
