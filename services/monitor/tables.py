"""The monitor's tables (SQLAlchemy typed mappings); only its store reads and writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model (its monitoring policy)."""

    __tablename__ = "monitor_specs"


SPECS = SpecView(SpecRow)


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


class AnswerSegmentRow(Base):
    """A poll's answers of one model, kept for the label-join horizon as one segment (see
    services.monitor.segments): the sorted digests of their request ids, and their columns."""

    __tablename__ = "monitor_answers"
    # One row and one index entry per segment (a poll's answers), never one per answer.
    __table_args__ = (Index("ix_monitor_answers_model", "model", "served_to", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    served_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    served_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer)
    labelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # its answers labelled so far
    digests: Mapped[bytes] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class LabelledRow(Base):
    """An answer its label met: what was answered and the truth, kept for the label horizon (the
    live performance, the canary's paired tests and feedback datasets read these)."""

    __tablename__ = "monitor_labelled"
    __table_args__ = (
        Index("ix_monitor_labelled_at", "served_at", postgresql_using="brin"),
        Index("ix_monitor_labelled_version", "model", "version", "served_at"),
        # The labelled answers not yet judged: a performance check counts and takes only these.
        Index(
            "ix_monitor_labelled_pending",
            "model",
            "version",
            postgresql_where=text("NOT evaluated AND role <> 'shadow'"),
        ),
    )

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    prediction: Mapped[str] = mapped_column(String(256))
    score: Mapped[float | None] = mapped_column(Float)
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    segment: Mapped[int] = mapped_column(BigInteger)  # the answers' segment it was found in
    label: Mapped[str] = mapped_column(String(256))
    labelled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    evaluated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    features: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # kept only when the spec asks for feedback
    label_batch: Mapped[str | None] = mapped_column(String(64))  # ce_id of the LabelsArrived that labelled it


class LabelRow(Base):
    """A label kept for the horizon: the join's other side. Labels that come before their answer
    wait here for it; every label stays until the horizon, so that a repeat is known as one and a
    shadow answer logged later still meets it."""

    __tablename__ = "monitor_labels"
    __table_args__ = (
        Index("ix_monitor_labels_waiting", "model", postgresql_where=text("joined_at IS NULL")),
        Index("ix_monitor_labels_received", "received_at", postgresql_using="brin"),
    )

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    label: Mapped[str] = mapped_column(String(256))
    batch: Mapped[str | None] = mapped_column(String(64))  # ce_id of the LabelsArrived that brought it
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    joined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # first met an answer


class LedgerRow(Base):
    """Where a model's labels and answers went (see records.Ledger), counted in the transactions
    that moved them."""

    __tablename__ = "monitor_ledger"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    labels_received: Mapped[int] = mapped_column(BigInteger, default=0)
    labels_joined: Mapped[int] = mapped_column(BigInteger, default=0)
    labels_duplicated: Mapped[int] = mapped_column(BigInteger, default=0)
    labels_unknown: Mapped[int] = mapped_column(BigInteger, default=0)
    labels_expired: Mapped[int] = mapped_column(BigInteger, default=0)
    labels_misdirected: Mapped[int] = mapped_column(BigInteger, default=0)
    answers_logged: Mapped[int] = mapped_column(BigInteger, default=0)
    answers_labelled: Mapped[int] = mapped_column(BigInteger, default=0)
    answers_expired: Mapped[int] = mapped_column(BigInteger, default=0)


class RetrainRow(Base):
    """When a model last asked for a retrain (the cooldown is counted from it)."""

    __tablename__ = "monitor_retrains"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(16))
    suppressed: Mapped[int] = mapped_column(Integer, default=0)


class TrainingRow(Base):
    """A training run started for a model (TrainingStarted, ModelTrained): on which data and spec."""

    __tablename__ = "monitor_trainings"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_version: Mapped[str] = mapped_column(String(128))
    spec_revision: Mapped[int] = mapped_column(Integer)


class DatasetRow(Base):
    """A dataset version as DataArrived announced it (a producer's, or the monitor's feedback)."""

    __tablename__ = "monitor_datasets"

    dataset: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    producer: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(String(2048))
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64))
    arrived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
