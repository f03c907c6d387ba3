"""Indexes for the retention of Switchyard's own records (`cleanup_records`): notification
deliveries by creation time, the cleanup log by start time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column) that `cleanup_records` deletes by.
INDEXES = (("notification_deliveries", "created_at"), ("cleanup_runs", "started_at"))


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
