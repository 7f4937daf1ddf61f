"""Alerter: alerts, groups, notifications and silences belong to a platform (its topic prefix).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("alerter_alerts", "alerter_groups", "alerter_notifications", "alerter_silences")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("platform", sa.String(length=200), nullable=False, server_default="modelbus"))
        op.alter_column(table, "platform", server_default=None)
    op.drop_constraint("alerter_alerts_pkey", "alerter_alerts", type_="primary")
    op.create_primary_key("alerter_alerts_pkey", "alerter_alerts", ["platform", "fingerprint"])
    op.create_index(op.f("ix_alerter_groups_platform"), "alerter_groups", ["platform"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alerter_groups_platform"), table_name="alerter_groups")
    op.drop_constraint("alerter_alerts_pkey", "alerter_alerts", type_="primary")
    op.create_primary_key("alerter_alerts_pkey", "alerter_alerts", ["fingerprint"])
    for table in TABLES:
        op.drop_column(table, "platform")
