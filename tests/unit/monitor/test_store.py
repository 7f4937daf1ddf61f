"""The monitor's in-memory store keeps the store contract."""

from __future__ import annotations

import pytest

from services.monitor.memory import MemoryStore
from tests.contracts.monitor_store import MonitorStoreContract


class TestMemoryStore(MonitorStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
