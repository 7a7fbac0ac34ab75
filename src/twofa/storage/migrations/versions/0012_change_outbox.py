"""`change_outbox`: the changes other gateway processes must hear, written in the transaction
that made them, so a node cut off from Redis is still heard through the database.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,  # ids never reused once pruning empties the table
    )
    op.create_index("ix_change_outbox_created_at", "change_outbox", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_change_outbox_created_at", table_name="change_outbox")
    op.drop_table("change_outbox")
