"""Channels, users and devices, listings and subscriptions, notification deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamps() -> list[sa.Column[datetime.datetime]]:
    return [sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "source_channels",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("telegram_id", sa.BigInteger(), unique=True),
        sa.Column("title", sa.String(255)),
        sa.Column("participants", sa.Integer()),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("join_job_id", sa.String(64)),
        *timestamps(),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(32)),
        sa.Column("telegram_user_id", sa.BigInteger(), index=True),
        sa.Column("name", sa.String(255)),
        *timestamps(),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("push_token", sa.String(512), nullable=False, unique=True),
        sa.Column("platform", sa.String(16)),
        sa.Column("dead_at", sa.DateTime(timezone=True)),
        sa.Column("dead_reason", sa.String(255)),
        *timestamps(),
    )
    op.create_table(
        "listings",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=False, index=True),
        sa.Column("title", sa.String(255)),
        sa.Column("bot_verified", sa.Boolean()),
        sa.Column("bot_permissions", sa.JSON()),
        sa.Column("verification_error", sa.Text()),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        *timestamps(),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("listing_id", sa.String(64),
                  sa.ForeignKey("listings.id", ondelete="SET NULL"), index=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("invite_link", sa.String(255)),
        sa.Column("invite_expires_at", sa.DateTime(timezone=True)),
        sa.Column("invited_at", sa.DateTime(timezone=True)),
        sa.Column("removed_at", sa.DateTime(timezone=True)),
        sa.Column("removal_reason", sa.String(16)),
        *timestamps(),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), index=True),
        sa.Column("batch_id", sa.String(64), index=True),
        sa.Column("user_id", sa.String(64), index=True),
        sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", ondelete="SET NULL")),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32)),
        sa.Column("provider_id", sa.String(255)),
        sa.Column("error", sa.Text()),
        sa.Column("error_code", sa.String(64)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        *timestamps(),
    )


def downgrade() -> None:
    for table in ("notification_deliveries", "subscriptions", "listings", "devices", "users",
                  "source_channels"):
        op.drop_table(table)
