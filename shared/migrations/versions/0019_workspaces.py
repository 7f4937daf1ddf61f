"""Workspaces: every model belongs to one (its spec's `workspace`, `default` when none is named),
and roles are granted per workspace; the registry keeps each model's workspace with the model.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("registry_models", sa.Column("workspace", sa.String(128), nullable=False, server_default="default"))
    op.create_index("ix_registry_models_workspace", "registry_models", ["workspace", "name"])


def downgrade() -> None:
    op.drop_index("ix_registry_models_workspace", table_name="registry_models")
    op.drop_column("registry_models", "workspace")
