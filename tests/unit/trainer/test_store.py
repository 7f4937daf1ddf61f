"""The trainer's in-memory store keeps the store contract."""

from __future__ import annotations

import pytest

from services.trainer.memory import MemoryStore
from tests.contracts.trainer_store import TrainerStoreContract


class TestMemoryStore(TrainerStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
