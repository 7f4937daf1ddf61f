"""The registry's in-memory store keeps the store contract."""

from __future__ import annotations

import pytest

from services.registry.memory import MemoryStore
from tests.contracts.registry_store import RegistryStoreContract


class TestMemoryStore(RegistryStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
