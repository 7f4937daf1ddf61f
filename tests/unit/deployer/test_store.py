"""The deployer's in-memory store keeps the store contract."""

from __future__ import annotations

import pytest

from services.deployer.memory import MemoryStore
from tests.contracts.deployer_store import DeployerStoreContract


class TestMemoryStore(DeployerStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
