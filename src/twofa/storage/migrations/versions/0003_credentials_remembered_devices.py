"""second-factor credentials, their hashed items, remembered devices, challenge payloads,
user directories

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_credentials_user_method", "credentials", ["user_id", "method"])
    op.create_table(
        "credential_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("credential_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.String(length=300), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["credential_id"], ["credentials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_credential_items_credential_id"), "credential_items", ["credential_id"]
    )
    op.create_table(
        "remembered_devices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=300), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_remembered_devices_user_id"), "remembered_devices", ["user_id"])
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("second_factor_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_method", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("directory", sa.String(length=32), server_default="local", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("directory")
        batch_op.drop_column("default_method")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("second_factor_at")
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.drop_column("payload")
    op.drop_index(op.f("ix_remembered_devices_user_id"), table_name="remembered_devices")
    op.drop_table("remembered_devices")
    op.drop_index(op.f("ix_credential_items_credential_id"), table_name="credential_items")
    op.drop_table("credential_items")
    op.drop_index("ix_credentials_user_method", table_name="credentials")
    op.drop_table("credentials")
