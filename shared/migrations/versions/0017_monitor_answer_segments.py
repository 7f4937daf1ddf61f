"""The monitor's answers kept as segments: a poll's answers of one model are one row (their
request ids' digests, sorted, and their columns), not a row and an index entry each; the answers
labels met are rows of their own (`monitor_labelled`). The answers kept so far are moved into
segments (up to 10,000 a segment, in the order they were served), the labelled ones also into
`monitor_labelled`.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from itertools import groupby

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.monitor.segments import Answers, segment  # the format the monitor reads

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

PER_SEGMENT = 10_000


def upgrade() -> None:
    op.create_table(
        "monitor_answers",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("served_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("served_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("digests", sa.LargeBinary, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_monitor_answers_model", "monitor_answers", ["model", "served_to", "id"])
    # Digests are random (compressing them only costs time); the columns compress well and fast.
    op.execute("ALTER TABLE monitor_answers ALTER COLUMN digests SET STORAGE EXTERNAL")
    bind = op.get_bind()
    lz4 = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    if bind.execute(sa.text(lz4)).scalar():  # PostgreSQL built with lz4
        op.execute("ALTER TABLE monitor_answers ALTER COLUMN payload SET COMPRESSION lz4")
    op.create_table(
        "monitor_labelled",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(160), primary_key=True),
        sa.Column("role", sa.String(8), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("prediction", sa.String(256), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("segment", sa.BigInteger, nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("features", postgresql.JSONB),
        sa.Column("label_batch", sa.String(64)),
    )
    op.create_index("ix_monitor_labelled_at", "monitor_labelled", ["served_at"], postgresql_using="brin")
    op.create_index("ix_monitor_labelled_version", "monitor_labelled", ["model", "version", "served_at"])
    op.create_index(
        "ix_monitor_labelled_pending",
        "monitor_labelled",
        ["model", "version"],
        postgresql_where=sa.text("NOT evaluated AND role <> 'shadow'"),
    )
    _move_answers(bind)
    op.drop_table("monitor_served")


def _move_answers(bind: sa.Connection) -> None:
    """Every kept answer into a segment; the labelled ones into monitor_labelled too."""
    rows = bind.execute(
        sa.text(
            "SELECT model, version, request_id, prediction, score, served_at, role, features, label,"
            " labelled_at, evaluated, label_batch FROM monitor_served ORDER BY model, served_at"
        )
    )
    for model, group in groupby(rows, key=lambda r: r.model):
        batch: list[sa.Row[tuple[object, ...]]] = []
        for row in group:
            batch.append(row)
            if len(batch) == PER_SEGMENT:
                _move(bind, model, batch)
                batch = []
        if batch:
            _move(bind, model, batch)


def _move(bind: sa.Connection, model: str, batch: list[sa.Row[tuple[object, ...]]]) -> None:
    (kept,) = Answers.of(
        [
            (
                r.model,
                r.version,
                r.request_id,
                r.prediction,
                r.score,
                r.served_at,
                r.role,
                None if r.features is None else json.dumps(r.features),
            )
            for r in batch
        ]
    )
    made = segment(kept)
    labelled = [r for r in batch if r.label is not None]
    segment_id = bind.execute(
        sa.text(
            "INSERT INTO monitor_answers (model, served_from, served_to, rows, labelled, digests, payload)"
            " VALUES (:model, :served_from, :served_to, :rows, :labelled, :digests, :payload) RETURNING id"
        ),
        {
            "model": model,
            "served_from": made.served_from,
            "served_to": made.served_to,
            "rows": made.rows,
            "labelled": len(labelled),
            "digests": made.digests,
            "payload": made.payload,
        },
    ).scalar_one()
    for r in labelled:
        bind.execute(
            sa.text(
                "INSERT INTO monitor_labelled (model, request_id, role, version, prediction, score, served_at,"
                " segment, label, labelled_at, evaluated, features, label_batch) VALUES (:model, :request_id,"
                " :role, :version, :prediction, :score, :served_at, :segment, :label, :labelled_at, :evaluated,"
                " CAST(:features AS jsonb), :label_batch) ON CONFLICT DO NOTHING"
            ),
            {
                "model": r.model,
                "request_id": r.request_id,
                "role": r.role,
                "version": r.version,
                "prediction": r.prediction,
                "score": r.score,
                "served_at": r.served_at,
                "segment": segment_id,
                "label": r.label,
                "labelled_at": r.labelled_at or r.served_at,
                "evaluated": r.evaluated,
                "features": None if r.features is None else json.dumps(r.features),
                "label_batch": r.label_batch,
            },
        )


def downgrade() -> None:
    raise NotImplementedError("0017 keeps answers as segments; going back would rebuild a row per answer")
