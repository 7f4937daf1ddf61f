"""Monitor: what each run was trained on, the dataset versions known, and served rows with their
role, features (for production feedback) and label batch; registry: a dataset's feedback lineage.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_trainings",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_version", sa.String(length=128), nullable=False),
        sa.Column("spec_revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model", "run_id"),
    )
    op.create_table(
        "monitor_datasets",
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("producer", sa.String(length=200), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "version"),
    )
    op.add_column("monitor_served", sa.Column("role", sa.String(length=8), nullable=False, server_default="stable"))
    op.add_column("monitor_served", sa.Column("features", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("monitor_served", sa.Column("label_batch", sa.String(length=64), nullable=True))
    op.add_column("registry_datasets", sa.Column("lineage", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("registry_datasets", "lineage")
    op.drop_column("monitor_served", "label_batch")
    op.drop_column("monitor_served", "features")
    op.drop_column("monitor_served", "role")
    op.drop_table("monitor_datasets")
    op.drop_table("monitor_trainings")
