"""Whom an audited action was done by, as the OpenID Connect provider knows them: the access
token's subject beside the name, in the registry's and the alerter's audit logs (empty for the
static tokens, whose name is all there is).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("registry_audit", "alerter_audit"):
        op.add_column(table, sa.Column("subject", sa.String(300), nullable=False, server_default=""))


def downgrade() -> None:
    for table in ("registry_audit", "alerter_audit"):
        op.drop_column(table, "subject")
