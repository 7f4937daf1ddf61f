"""The monitor's PostgreSQL store keeps the store contract (as its in-memory twin does)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.monitor import segments
from services.monitor import store as store_module
from services.monitor.segments import Answers
from services.monitor.store import SqlStore
from tests.contracts.monitor_store import MonitorStoreContract


class TestSqlStore(MonitorStoreContract):
    @pytest.fixture
    async def store(self, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[SqlStore]:
        async with sessions() as session, session.begin():
            yield SqlStore(session)
            await session.rollback()


async def test_two_request_ids_with_one_digest_never_take_each_others_label(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments are searched by 64-bit digests; the request id itself decides. Here every id has
    the same digest, so each label's search finds every answer, and only its own is labelled."""
    monkeypatch.setattr(store_module, "digests", lambda ids: np.zeros(len(ids), dtype=np.uint64))
    monkeypatch.setattr(segments, "digests", lambda ids: np.zeros(len(ids), dtype=np.uint64))
    model, now = f"m-{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    async with sessions() as session, session.begin():
        store = SqlStore(session)
        await store.add_served(Answers.of([(model, 1, r, "1", 0.5, now, "stable", None) for r in ("a", "b", "c")]))
        parked = await store.park_labels(model, {"b": ("0", "lab"), "zz": ("1", "lab")}, now, timedelta(days=1))
        assert [(j.request_id, j.label) for j in parked.met.answers] == [("b", "0")]
        assert (parked.met.labels, parked.waiting) == (1, 1)
        await session.rollback()
