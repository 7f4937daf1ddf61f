"""The services' table metadata, for comparing with a database and autogenerating a migration.

The migration tree itself (shared/migrations) imports no service; this is where the tables of all
six services are gathered, for operators' tooling.
"""

from __future__ import annotations

import importlib

from alembic import command
from sqlalchemy import MetaData

from shared.runtime.db import Base, alembic_config
from shared.runtime.settings import Settings

STORES = (
    *(f"services.{name}.store" for name in ("registry", "trainer", "evaluator", "deployer", "monitor", "alerter")),
    "shared.runtime.accounts",  # service accounts, read by every API
)


def metadata() -> MetaData:
    """Every table the services declare (importing their stores registers them on one metadata)."""
    for module in STORES:
        importlib.import_module(module)
    return Base.metadata


def autogenerate(settings: Settings, message: str) -> None:
    """Write a new migration with what the services' tables have that the database lacks."""
    config = alembic_config(settings)
    config.attributes["target_metadata"] = metadata()
    command.revision(config, message=message, autogenerate=True)
