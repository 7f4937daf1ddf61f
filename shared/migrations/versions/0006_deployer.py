"""Deployer: its view of specs and versions, rollouts (the persisted state machine), the command log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployer_commands",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(op.f("ix_deployer_commands_model"), "deployer_commands", ["model"], unique=False)
    op.create_table(
        "deployer_models",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("champion", sa.Integer(), nullable=True),
        sa.Column("rollout_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("model"),
    )
    op.create_table(
        "deployer_rollouts",
        sa.Column("rollout_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("stable", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("paused_by", sa.String(length=128), nullable=True),
        sa.Column("paused_from", sa.String(length=16), nullable=True),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id"),
    )
    op.create_index(op.f("ix_deployer_rollouts_model"), "deployer_rollouts", ["model"], unique=False)
    op.create_table(
        "deployer_specs",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("model"),
    )
    op.create_table(
        "deployer_versions",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifacts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("decision", sa.String(length=32), nullable=True),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("model", "version"),
    )


def downgrade() -> None:
    op.drop_table("deployer_versions")
    op.drop_table("deployer_specs")
    op.drop_index(op.f("ix_deployer_rollouts_model"), table_name="deployer_rollouts")
    op.drop_table("deployer_rollouts")
    op.drop_table("deployer_models")
    op.drop_index(op.f("ix_deployer_commands_model"), table_name="deployer_commands")
    op.drop_table("deployer_commands")
