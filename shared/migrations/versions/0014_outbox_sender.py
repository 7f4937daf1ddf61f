"""Outbox: the service that staged each row, so that only that service's relay publishes it (each
service is a principal of its own on the bus, allowed to write only its own events).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("sender", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "sender")
