"""The registry's PostgreSQL store keeps the store contract (as its in-memory twin does)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.store import SqlStore
from tests.contracts.registry_store import RegistryStoreContract


class TestSqlStore(RegistryStoreContract):
    @pytest.fixture
    async def store(self, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[SqlStore]:
        async with sessions() as session, session.begin():
            yield SqlStore(session)
            await session.rollback()
