"""Database plumbing shared by every service: engine, sessions, the inbox and the outbox."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from alembic.config import Config
from sqlalchemy import BigInteger, DateTime, Identity, Index, LargeBinary, String, Table, func, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.contract.envelope import Headers, Outgoing
from shared.runtime.settings import Settings


class Base(DeclarativeBase):
    """Declarative base of every modelbus table (one metadata, one migration tree)."""


class InboxRow(Base):
    """A message a consumer has handled: the key of idempotent consumption."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    handled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OutboxRow(Base):
    """An event written with a service's own changes, published by the relay after commit."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    topic: Mapped[str] = mapped_column(String(300))
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[list[str]]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The service that staged it (its service_name): only that service's relay publishes it, as
    # only its principal may write the event. Null (rows from before): any relay of the platform.
    sender: Mapped[str | None] = mapped_column(String(100))


def core_table(mapped: type[Base]) -> Table:
    """The Core table of a mapped class, for hot statements that skip the ORM's per-row work."""
    return cast(Table, mapped.__table__)


def connect_args(settings: Settings) -> dict[str, Any]:
    """What every connection of this platform starts with: its schema first on the search path (a
    platform sharing the database with others reads and writes only its own tables)."""
    schema = settings.database_schema
    return {"server_settings": {"search_path": schema}} if schema else {}


def make_engine(settings: Settings) -> AsyncEngine:
    """The process's one async engine."""
    return create_async_engine(
        settings.database_url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args(settings)
    )


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory bound to the engine."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def claim_inbox(session: AsyncSession, *, consumer: str, event_id: str, event_type: str) -> bool:
    """Record that `consumer` handles `event_id`; False if it already did (a redelivery)."""
    inbox = core_table(InboxRow)  # a Core statement: every handled message runs it
    stmt = (
        insert(inbox)
        .values(consumer=consumer, event_id=event_id, event_type=event_type)
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return (await session.execute(stmt)).first() is not None


async def claim_inbox_many(session: AsyncSession, *, consumer: str, events: list[tuple[str, str]]) -> set[str]:
    """Record that `consumer` handles each (event_id, event_type); returns the ids not handled before."""
    inbox = core_table(InboxRow)
    stmt = (
        insert(inbox)
        .values([{"consumer": consumer, "event_id": event_id, "event_type": kind} for event_id, kind in events])
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return set((await session.scalars(stmt)).all())


def add_to_outbox(session: AsyncSession, *, topic: str, message: Outgoing, sender: str | None = None) -> None:
    """Stage a message in the outbox, in the caller's transaction, for `sender`'s relay."""
    session.add(
        OutboxRow(
            event_id=message.event_id,
            sender=sender,
            topic=topic,
            key=message.key,
            value=message.value,
            headers=[[name, base64.b64encode(data).decode()] for name, data in message.headers],
        )
    )


def outbox_headers(row: OutboxRow) -> Headers:
    """Headers of an outbox row as Kafka wants them."""
    return [(name, base64.b64decode(data)) for name, data in row.headers]


def alembic_config(settings: Settings) -> Config:
    """Alembic configuration of the one migration tree, for the settings' database."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parents[1] / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    config.attributes["schema"] = settings.database_schema
    return config


def head_revision(settings: Settings) -> str:
    """The newest migration of the tree this code ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    assert head is not None, "the migration tree has no head"
    return head


async def current_revision(settings: Settings) -> str | None:
    """The migration the database is at (None: never migrated). Raises when it cannot be reached."""
    from alembic.migration import MigrationContext

    engine = create_async_engine(
        settings.database_url, pool_size=1, connect_args={"timeout": 5, **connect_args(settings)}
    )
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()
