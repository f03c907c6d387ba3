"""Discord guilds' configuration: welcome message, default, verified and self-assignable roles.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "discord_guilds",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("welcome_message", sa.Text(), nullable=True),
        sa.Column("default_role_id", sa.String(20), nullable=True),
        sa.Column("verified_role_id", sa.String(20), nullable=True),
        sa.Column("self_roles", sa.JSON(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discord_guilds")
