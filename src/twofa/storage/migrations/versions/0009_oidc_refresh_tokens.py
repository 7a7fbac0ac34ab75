"""oidc_refresh_tokens: refresh tokens of the OpenID Connect provider, kept as SHA-256 digests,
rotated on each use. The rotations of one grant share a `family_id` so that a reused token
revokes the whole chain; each row records the access token issued with it (`issued_jti`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "oidc_refresh_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        _when("auth_time"),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("issued_jti", sa.String(length=64), nullable=True),
        _when("created_at"),
        _when("expires_at"),
        _when("used_at", nullable=True),
        _when("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_oidc_refresh_tokens_family_id", "oidc_refresh_tokens", ["family_id"])
    op.create_index(
        "ix_oidc_refresh_tokens_application_id", "oidc_refresh_tokens", ["application_id"]
    )
    op.create_index("ix_oidc_refresh_tokens_user_id", "oidc_refresh_tokens", ["user_id"])
    op.create_index("ix_oidc_refresh_tokens_expires_at", "oidc_refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oidc_refresh_tokens")
