"""The monitor's tables: its views (specs, versions and their reference profiles, live rollouts),
the open windows' rows, every closed window's results, and when each model last asked for a retrain.

An open window lives in PostgreSQL, not in memory: the PredictionsLogged of a poll add chunks (their
rows, column by column, see `pack`) in the transaction that claims the events, so a monitor that
dies loses nothing and counts nothing twice; a window is read back once, when it closes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.contract.events import ReferenceProfile
from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model (its monitoring policy)."""

    __tablename__ = "monitor_specs"


specs = SpecView(SpecRow)


class RunRow(Base):
    """A training run's reference profile and validation metrics (from ModelTrained)."""

    __tablename__ = "monitor_runs"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(16))
    profile: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB)


class VersionRow(Base):
    """Which run a version is (from ModelRegistered): the link to its reference."""

    __tablename__ = "monitor_versions"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))


class LiveRow(Base):
    """A model's rollout as the last RolloutChanged left it."""

    __tablename__ = "monitor_live"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    rollout_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    candidate: Mapped[int] = mapped_column(Integer)
    stable: Mapped[int | None] = mapped_column(Integer)


class OpenWindow(Base):
    """The open window of a model version: how many rows it holds since when; locked while added to."""

    __tablename__ = "monitor_open_windows"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ChunkRow(Base):
    """Rows of an open window, column by column."""

    __tablename__ = "monitor_chunks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class WindowRow(Base):
    """A closed window's results (drift per feature), for the API and plots."""

    __tablename__ = "monitor_windows"

    window_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer)
    drifted_share: Mapped[float | None] = mapped_column(Float)
    dataset_drift: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB)
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ServedRow(Base):
    """A served prediction, kept for the label-join horizon: what was answered, and later the truth."""

    __tablename__ = "monitor_served"
    __table_args__ = (Index("ix_monitor_served_request", "model", "request_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(160))
    prediction: Mapped[str] = mapped_column(String(256))
    score: Mapped[float | None] = mapped_column(Float)
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    label: Mapped[str | None] = mapped_column(String(256))
    labelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    evaluated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class RetrainRow(Base):
    """When a model last asked for a retrain (the cooldown is counted from it)."""

    __tablename__ = "monitor_retrains"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(16))
    suppressed: Mapped[int] = mapped_column(Integer, default=0)


# ---------------------------------------------------------------- views


async def keep_run(
    session: AsyncSession, model: str, run_id: str, task: str, profile: ReferenceProfile, metrics: dict[str, float]
) -> None:
    """Keep a run's reference profile (the first one stands: a run is trained once)."""
    await session.execute(
        insert(RunRow)
        .values(model=model, run_id=run_id, task=task, profile=profile.model_dump(mode="json"), metrics=metrics)
        .on_conflict_do_nothing()
    )


async def keep_version(session: AsyncSession, model: str, version: int, run_id: str) -> None:
    """Link a version to its run."""
    await session.execute(
        insert(VersionRow).values(model=model, version=version, run_id=run_id).on_conflict_do_nothing()
    )


@dataclass(frozen=True)
class Reference:
    """A version's reference: its profile, task and validation metrics."""

    task: str
    profile: ReferenceProfile
    metrics: dict[str, float]


async def reference_of(session: AsyncSession, model: str, version: int) -> Reference | None:
    """The reference profile of a version, once both its registration and its training were seen."""
    row = await session.execute(
        select(RunRow.task, RunRow.profile, RunRow.metrics)
        .join(VersionRow, (VersionRow.model == RunRow.model) & (VersionRow.run_id == RunRow.run_id))
        .where(VersionRow.model == model, VersionRow.version == version)
    )
    found = row.first()
    if found is None:
        return None
    return Reference(found.task, ReferenceProfile.model_validate(found.profile), dict(found.metrics))


async def keep_live(
    session: AsyncSession, model: str, rollout_id: str, state: str, candidate: int, stable: int | None
) -> None:
    """Remember the model's rollout as it stands."""
    values = {"rollout_id": rollout_id, "state": state, "candidate": candidate, "stable": stable}
    await session.execute(
        insert(LiveRow).values(model=model, **values).on_conflict_do_update(index_elements=[LiveRow.model], set_=values)
    )


# ---------------------------------------------------------------- windows


CHUNK_FORMAT = b"MBC1"  # a chunk: this, a 4-byte header length, a JSON header, the columns' bytes


def pack(columns: dict[str, np.ndarray[Any, Any]]) -> bytes:
    """A chunk's 1-D columns as bytes: a JSON header of (name, dtype, length), then each column's
    raw bytes (no pickled objects: strings are fixed-width unicode). Packing and unpacking cost a
    copy, not the zip container `.npz` would be."""
    header, parts = [], []
    for name, array in columns.items():
        if array.dtype.hasobject or array.ndim != 1:
            raise ValueError(f"column {name!r}: only 1-D arrays of fixed-size values are kept, not {array.dtype}")
        header.append((name, array.dtype.str, int(array.shape[0])))
        parts.append(np.ascontiguousarray(array).tobytes())
    head = json.dumps(header).encode()
    return b"".join([CHUNK_FORMAT, len(head).to_bytes(4, "little"), head, *parts])


def unpack(payload: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """The columns of a chunk (read-only views of the payload)."""
    if payload[:4] != CHUNK_FORMAT:  # written by an earlier release, as .npz
        with np.load(io.BytesIO(payload), allow_pickle=False) as found:
            return {name: found[name] for name in found.files}
    size = int.from_bytes(payload[4:8], "little")
    offset = 8 + size
    columns = {}
    for name, dtype, length in json.loads(payload[8:offset]):
        kind = np.dtype(dtype)
        columns[name] = np.frombuffer(payload, dtype=kind, count=length, offset=offset)
        offset += kind.itemsize * length
    return columns


async def open_rows(session: AsyncSession, model: str, version: int) -> int:
    """How many rows the version's open window holds."""
    held = await session.scalar(select(OpenWindow.rows).where(OpenWindow.model == model, OpenWindow.version == version))
    return int(held or 0)


async def add_chunk(
    session: AsyncSession,
    model: str,
    version: int,
    columns: dict[str, np.ndarray[Any, Any]],
    rows: int,
    first_at: datetime,
    last_at: datetime,
) -> OpenWindow:
    """Add rows to the version's open window (one statement, which also locks its row); returns the window."""
    stmt = insert(OpenWindow).values(model=model, version=version, rows=rows, first_at=first_at, last_at=last_at)
    counted = await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[OpenWindow.model, OpenWindow.version],
            set_={
                "rows": OpenWindow.rows + rows,
                "first_at": func.least(func.coalesce(OpenWindow.first_at, first_at), first_at),
                "last_at": func.greatest(func.coalesce(OpenWindow.last_at, last_at), last_at),
            },
        )
        .returning(OpenWindow)
        .execution_options(populate_existing=True)
    )
    window = counted.scalar_one()
    session.add(ChunkRow(model=model, version=version, rows=rows, payload=pack(columns)))
    return window


async def take_chunks(session: AsyncSession, model: str, version: int) -> list[dict[str, np.ndarray[Any, Any]]]:
    """Every chunk of the open window, oldest first, removed (the caller closes the window)."""
    rows = await session.execute(
        delete(ChunkRow)
        .where(ChunkRow.model == model, ChunkRow.version == version)
        .returning(ChunkRow.id, ChunkRow.payload)
    )
    return [unpack(payload) for _, payload in sorted(rows.all())]


async def aged_windows(session: AsyncSession, now: datetime) -> list[tuple[str, int, float]]:
    """Open windows with rows, with their age in seconds: candidates for closing by time."""
    rows = await session.execute(
        select(OpenWindow.model, OpenWindow.version, OpenWindow.first_at).where(OpenWindow.rows > 0)
    )
    return [(m, v, (now - first).total_seconds()) for m, v, first in rows.all() if first is not None]


async def lock_window(session: AsyncSession, model: str, version: int) -> OpenWindow | None:
    """The open window of a version, locked."""
    return await session.scalar(
        select(OpenWindow).where(OpenWindow.model == model, OpenWindow.version == version).with_for_update()
    )


async def record_window(session: AsyncSession, row: WindowRow) -> None:
    """Keep a closed window's results."""
    session.add(row)


async def last_summary(session: AsyncSession, model: str, version: int) -> dict[str, Any] | None:
    """The summary of a version's most recently closed window."""
    result = await session.scalar(
        select(WindowRow.result)
        .where(WindowRow.model == model, WindowRow.version == version)
        .order_by(WindowRow.closed_at.desc(), WindowRow.ended_at.desc())
        .limit(1)
    )
    summary = (result or {}).get("summary")
    return summary if isinstance(summary, dict) else None


async def retrain_allowed(session: AsyncSession, model: str, now: datetime, cooldown: float, reason: str) -> bool:
    """Whether a retrain may be requested now; if so, the request is recorded (the cooldown restarts)."""
    fresh = await session.execute(
        insert(RetrainRow)
        .values(model=model, requested_at=now, reason=reason, suppressed=0)
        .on_conflict_do_nothing()
        .returning(RetrainRow.model)
    )
    if fresh.first() is not None:
        return True
    row = await session.scalar(select(RetrainRow).where(RetrainRow.model == model).with_for_update())
    assert row is not None
    if (now - row.requested_at).total_seconds() < cooldown:
        row.suppressed += 1
        return False
    row.requested_at, row.reason = now, reason
    return True


# ---------------------------------------------------------------- labels


async def add_served(session: AsyncSession, records: list[tuple[str, int, str, str, float | None, datetime]]) -> None:
    """Keep served predictions for the label join: (model, version, request id, prediction, score, served at).

    Written with COPY on the transaction's own connection (measured faster here than one INSERT of
    unnested arrays).
    """
    if not records:
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        "monitor_served",
        records=records,
        columns=["model", "version", "request_id", "prediction", "score", "served_at"],
    )


async def label(
    session: AsyncSession, model: str, truths: dict[str, str], now: datetime, horizon: timedelta
) -> list[int]:
    """Attach labels to predictions served within the horizon (one statement); the versions labelled."""
    rows = await session.execute(
        text(
            "UPDATE monitor_served AS s SET label = v.label, labelled_at = :now"
            " FROM unnest(CAST(:ids AS text[]), CAST(:labels AS text[])) AS v(request_id, label)"
            " WHERE s.model = :model AND s.request_id = v.request_id"
            " AND s.served_at >= :since AND s.label IS NULL"
            " RETURNING s.version"
        ),
        {
            "now": now,
            "ids": list(truths),
            "labels": list(truths.values()),
            "model": model,
            "since": now - horizon,
        },
    )
    return sorted({int(version) for (version,) in rows.all()})


async def labelled_pending(session: AsyncSession, model: str, version: int) -> int:
    """Labelled predictions of a version not yet in a performance window."""
    count = await session.scalar(
        select(func.count())
        .select_from(ServedRow)
        .where(
            ServedRow.model == model,
            ServedRow.version == version,
            ServedRow.label.is_not(None),
            ServedRow.evaluated.is_(False),
        )
    )
    return int(count or 0)


async def take_labelled(session: AsyncSession, model: str, version: int) -> list[tuple[str, str, float | None]]:
    """The labelled, not yet evaluated predictions of a version, marked evaluated: (label, prediction, score)."""
    rows = await session.execute(
        update(ServedRow)
        .where(
            ServedRow.model == model,
            ServedRow.version == version,
            ServedRow.label.is_not(None),
            ServedRow.evaluated.is_(False),
        )
        .values(evaluated=True)
        .returning(ServedRow.label, ServedRow.prediction, ServedRow.score)
    )
    return [(str(a), str(b), c) for a, b, c in rows.all()]


async def forget_served(session: AsyncSession, before: datetime) -> int:
    """Drop predictions older than the label horizon; returns how many."""
    result = await session.execute(delete(ServedRow).where(ServedRow.served_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
