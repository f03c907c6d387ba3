"""Messages with their media fields, and every media object written to storage.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "messages",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=True, index=True),
        sa.Column("chat_id", sa.String(64), nullable=True, index=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("media_type", sa.String(16), nullable=True),
        sa.Column("media_key", sa.String(512), nullable=True),
        sa.Column("media_original_name", sa.String(255), nullable=True),
        sa.Column("media_url", sa.String(1024), nullable=True),
        sa.Column("thumbnail_url", sa.String(1024), nullable=True),
        sa.Column("media_metadata", sa.JSON(), nullable=True),
        sa.Column("media_status", sa.String(16), nullable=True),
        sa.Column("media_error", sa.Text(), nullable=True),
        sa.Column("media_processed_at", when, nullable=True),
        sa.Column("media_removed_at", when, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
    )
    op.create_table(
        "media_objects",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=True),
        sa.Column("owner_user_id", sa.String(64), nullable=True, index=True),
        sa.Column("message_id", sa.String(64), nullable=True, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", when, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("media_objects")
    op.drop_table("messages")
