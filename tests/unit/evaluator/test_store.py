"""The evaluator's in-memory store keeps the store contract."""

from __future__ import annotations

import pytest

from services.evaluator.memory import MemoryStore
from tests.contracts.evaluator_store import EvaluatorStoreContract


class TestMemoryStore(EvaluatorStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
