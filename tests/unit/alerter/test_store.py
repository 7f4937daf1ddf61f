"""The alerter's in-memory store keeps the store contract."""

from __future__ import annotations

import pytest

from services.alerter.memory import MemoryStore
from tests.contracts.alerter_store import AlerterStoreContract


class TestMemoryStore(AlerterStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore("contract")
