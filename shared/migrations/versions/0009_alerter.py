"""Alerter: alerts, groups, the notification log, silences, audit and its spec view.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerter_alerts",
        sa.Column("fingerprint", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("annotations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_reason", sa.Text(), nullable=True),
        sa.Column("times_raised", sa.Integer(), nullable=False),
        sa.Column("source_event_type", sa.String(length=64), nullable=False),
        sa.Column("source_event_id", sa.String(length=128), nullable=False),
        sa.Column("acked_by", sa.String(length=128), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("fingerprint"),
    )
    op.create_index("alerter_alerts_by_status", "alerter_alerts", ["status", "updated_at"], unique=False)
    op.create_index(op.f("ix_alerter_alerts_model"), "alerter_alerts", ["model"], unique=False)
    op.create_table(
        "alerter_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_alerter_audit_at"), "alerter_audit", ["at"], unique=False)
    op.create_table(
        "alerter_group_alerts",
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("group_key", "fingerprint"),
    )
    op.create_index(op.f("ix_alerter_group_alerts_fingerprint"), "alerter_group_alerts", ["fingerprint"], unique=False)
    op.create_table(
        "alerter_groups",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("receiver", sa.String(length=100), nullable=False),
        sa.Column("group_labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_flush_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_alerter_groups_next_flush_at"), "alerter_groups", ["next_flush_at"], unique=False)
    op.create_table(
        "alerter_notifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("receiver", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "alerter_notifications_pending", "alerter_notifications", ["status", "next_attempt_at"], unique=False
    )
    op.create_index(op.f("ix_alerter_notifications_group_key"), "alerter_notifications", ["group_key"], unique=False)
    op.create_table(
        "alerter_silences",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("matchers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expired_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_alerter_silences_ends_at"), "alerter_silences", ["ends_at"], unique=False)
    op.create_table(
        "alerter_specs",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("model"),
    )


def downgrade() -> None:
    op.drop_table("alerter_specs")
    op.drop_index(op.f("ix_alerter_silences_ends_at"), table_name="alerter_silences")
    op.drop_table("alerter_silences")
    op.drop_index(op.f("ix_alerter_notifications_group_key"), table_name="alerter_notifications")
    op.drop_index("alerter_notifications_pending", table_name="alerter_notifications")
    op.drop_table("alerter_notifications")
    op.drop_index(op.f("ix_alerter_groups_next_flush_at"), table_name="alerter_groups")
    op.drop_table("alerter_groups")
    op.drop_index(op.f("ix_alerter_group_alerts_fingerprint"), table_name="alerter_group_alerts")
    op.drop_table("alerter_group_alerts")
    op.drop_index(op.f("ix_alerter_audit_at"), table_name="alerter_audit")
    op.drop_table("alerter_audit")
    op.drop_index(op.f("ix_alerter_alerts_model"), table_name="alerter_alerts")
    op.drop_index("alerter_alerts_by_status", table_name="alerter_alerts")
    op.drop_table("alerter_alerts")
