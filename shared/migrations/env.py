"""Alembic environment: runs the one migration tree on the async engine.

The migrations are written out, so running them needs no table metadata. Autogenerating a new one
compares the services' tables with the database: `modelbus db revision` (shared.ops.migrations)
passes their metadata in `config.attributes["target_metadata"]`, so nothing here imports a service.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

target_metadata = context.config.attributes.get("target_metadata")


def _run(connection: Connection) -> None:
    schema = context.config.attributes.get("schema")
    if schema:  # a platform of its own in this database: its tables, and its alembic_version, in its schema
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.execute(text(f'SET search_path TO "{schema}"'))
        connection.commit()
        connection.dialect.default_schema_name = schema
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
