"""A service's view of the model specs, built from the compacted specs topic.

Each service keeps its own table (it owns its state), made of `SpecViewColumns` plus whatever it
needs besides, and reads and writes it through a `SpecView` bound to that table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Integer, String, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.contract.events import ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.db import Base
from shared.runtime.errors import Refused


class SpecViewColumns:
    """Columns of a spec view table: the model, the revision in force and the spec."""

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)


def is_news(known: int | None, event: ModelSpecApplied) -> bool:
    """Whether a spec revision changes a service's view: the first it sees of a model (the
    compacted topic keeps the latest), or the next of the registry's numbering. An older or equal
    one is stale (False). One that skips ahead is refused: the registry numbers a model's
    revisions one by one (and the topic keeps every one for a week), so only a forged event skips,
    and taking it would make every later real revision look older."""
    if known is None or event.revision == known + 1:
        return True
    if event.revision <= known:
        return False
    raise Refused(
        f"spec revision {event.revision} of {event.model} skips ahead of revision {known}: "
        "the registry numbers a model's revisions one by one"
    )


async def keep_spec(session: AsyncSession, table: type[Base], event: ModelSpecApplied, **extra: Any) -> bool:
    """Keep the next revision of a model's spec; False if an older one arrived late (nothing
    changed); Refused for one that skips ahead."""
    known = await session.scalar(
        select(table.revision).where(table.model == event.model).with_for_update()  # type: ignore[attr-defined]
    )
    if not is_news(known, event):
        return False
    values = {"revision": event.revision, "spec": event.spec.model_dump(mode="json"), **extra}
    stmt = insert(table).values(model=event.model, **values)
    kept = await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.model],  # type: ignore[attr-defined]
            set_=values,
            where=table.revision < stmt.excluded.revision,  # type: ignore[attr-defined]
        ).returning(table.model)  # type: ignore[attr-defined]
    )
    return kept.first() is not None


async def spec_of(session: AsyncSession, table: type[Base], model: str) -> tuple[int, ModelSpec] | None:
    """(revision, spec) in force for a model, if any; keys of a newer spec format are dropped."""
    row: Any = await session.get(table, model)
    if row is None:
        return None
    return row.revision, ModelSpec.model_validate(row.spec, context={"lenient": True})


@dataclass(frozen=True)
class SpecView:
    """A service's spec view: its table, with keep and read."""

    table: type[Base]

    async def keep(self, session: AsyncSession, event: ModelSpecApplied, **extra: Any) -> bool:
        """Keep the newest revision; False if an older one arrived late (nothing changed)."""
        return await keep_spec(session, self.table, event, **extra)

    async def revision_of(self, session: AsyncSession, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""
        return await spec_of(session, self.table, model)

    async def of(self, session: AsyncSession, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""
        found = await spec_of(session, self.table, model)
        return found[1] if found else None


class SqlSpecs:
    """`keep_spec` and `spec_of` of a service's SQL store, on the SpecView its class names (`specs`);
    the store provides `session`."""

    session: AsyncSession
    specs: ClassVar[SpecView]

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""
        return await self.specs.keep(self.session, event)

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""
        return await self.specs.of(self.session, model)

    async def revision_of(self, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""
        return await self.specs.revision_of(self.session, model)
