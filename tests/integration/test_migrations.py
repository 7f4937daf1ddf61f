"""The one migration tree creates exactly the tables the services' models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

import services.evaluator.store
import services.registry.store
import services.trainer.store  # noqa: F401
from shared.db import Base


async def test_migrations_at_head_match_every_table_the_code_declares(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    # it_effects is the integration tests' own table, not part of the schema.
    missing = [d for d in differences if "it_effects" not in str(d)]
    assert missing == [], f"write a migration for: {missing}"
