"""The alerter's PostgreSQL store keeps the store contract (as its in-memory twin does)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerter.store import SqlStore
from tests.contracts.alerter_store import AlerterStoreContract


class TestSqlStore(AlerterStoreContract):
    @pytest.fixture
    async def store(self, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[SqlStore]:
        async with sessions() as session, session.begin():
            yield SqlStore(session, f"contract-{uuid.uuid4().hex[:8]}")
            await session.rollback()
