"""What arrives out of order across topics: the registry parks a rollout's status that arrives
before the version's evaluation (applied once the evaluation is recorded), and the alerter keeps
the latest resolution of each model's alerts of a kind (an event that happened before it and
arrives after it raises nothing).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("registry_versions", sa.Column("parked_status", sa.String(32), nullable=True))
    op.add_column("registry_versions", sa.Column("parked_reason", sa.Text, nullable=True))
    op.create_table(
        "alerter_resolutions",
        sa.Column("platform", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("below_version", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("alerter_resolutions")
    op.drop_column("registry_versions", "parked_reason")
    op.drop_column("registry_versions", "parked_status")
