"""The monitor's two-way label join and its ledger: labels kept for the horizon (the ones that come
before their answer wait there for it), and per model where every label and answer went.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COUNTS = (
    "labels_received",
    "labels_joined",
    "labels_duplicated",
    "labels_unknown",
    "labels_expired",
    "labels_misdirected",
    "answers_logged",
    "answers_labelled",
    "answers_expired",
)


def upgrade() -> None:
    op.create_table(
        "monitor_labels",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(160), primary_key=True),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("batch", sa.String(64)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_monitor_labels_waiting", "monitor_labels", ["model"], postgresql_where=sa.text("joined_at IS NULL")
    )
    op.create_index("ix_monitor_labels_received", "monitor_labels", ["received_at"], postgresql_using="brin")
    op.create_index(
        "ix_monitor_served_pending",
        "monitor_served",
        ["model", "version"],
        postgresql_where=sa.text("label IS NOT NULL AND NOT evaluated AND role <> 'shadow'"),
    )
    op.create_table(
        "monitor_ledger",
        sa.Column("model", sa.String(128), primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in COUNTS),
    )


def downgrade() -> None:
    op.drop_table("monitor_ledger")
    op.drop_index("ix_monitor_served_pending", table_name="monitor_served")
    op.drop_index("ix_monitor_labels_received", table_name="monitor_labels")
    op.drop_index("ix_monitor_labels_waiting", table_name="monitor_labels")
    op.drop_table("monitor_labels")
