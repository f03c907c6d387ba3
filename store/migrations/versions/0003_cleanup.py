"""Stories, sessions, temporary files, prekeys, user statistics and the cleanup log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)
#: The messages columns the cleanup jobs search by.
MESSAGE_INDEXES = ("created_at", "media_key", "media_url", "thumbnail_url")


def user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), user_fk(), nullable=False, index=True),
        sa.Column("media_key", sa.String(512), nullable=True),
        sa.Column("thumbnail_key", sa.String(512), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("deleted_at", WHEN, nullable=True),
    )
    op.create_index("ix_stories_live", "stories", ["deleted_at", "created_at"])
    op.create_index("ix_stories_media_key", "stories", ["media_key"])
    op.create_index("ix_stories_thumbnail_key", "stories", ["thumbnail_key"])
    for column in MESSAGE_INDEXES:
        op.create_index(f"ix_messages_{column}", "messages", [column])
    op.create_table(
        "user_stats",
        sa.Column("user_id", sa.String(64), user_fk(), primary_key=True),
        sa.Column("stories_expired", sa.Integer(), nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), user_fk(), nullable=False, index=True),
        sa.Column("device_id", sa.String(36),
                  sa.ForeignKey("devices.id", ondelete="SET NULL"), nullable=True, index=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("last_active_at", WHEN, nullable=False, index=True),
    )
    create_files_and_keys()


def create_files_and_keys() -> None:
    op.create_table(
        "temp_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("created_at", WHEN, nullable=False, index=True),
    )
    op.create_table(
        "prekeys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), user_fk(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("used_at", WHEN, nullable=True, index=True),
        sa.UniqueConstraint("user_id", "key_id", name="uq_prekeys_user_key"),
    )
    op.create_table(
        "cleanup_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job", sa.String(32), nullable=False, index=True),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("more", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    for table in ("cleanup_runs", "prekeys", "temp_files", "sessions", "user_stats"):
        op.drop_table(table)
    for column in MESSAGE_INDEXES:
        op.drop_index(f"ix_messages_{column}", table_name="messages")
    for name in ("ix_stories_thumbnail_key", "ix_stories_media_key", "ix_stories_live"):
        op.drop_index(name, table_name="stories")
    op.drop_table("stories")
