"""Monitor: served answers without a surrogate key, with a hash index on request_id for the label
join, BRIN on served_at for the horizon's sweep, and a partial index on the labelled rows.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_monitor_served_request", table_name="monitor_served")
    op.drop_column("monitor_served", "id")
    op.create_index("ix_monitor_served_request", "monitor_served", ["request_id"], postgresql_using="hash")
    op.create_index("ix_monitor_served_at", "monitor_served", ["served_at"], postgresql_using="brin")
    op.create_index(
        "ix_monitor_served_labelled",
        "monitor_served",
        ["model", "version", "served_at"],
        postgresql_where=sa.text("label IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_monitor_served_labelled", table_name="monitor_served")
    op.drop_index("ix_monitor_served_at", table_name="monitor_served")
    op.drop_index("ix_monitor_served_request", table_name="monitor_served")
    op.add_column("monitor_served", sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False))
    op.create_primary_key("monitor_served_pkey", "monitor_served", ["id"])
    op.create_index("ix_monitor_served_request", "monitor_served", ["model", "request_id"])
