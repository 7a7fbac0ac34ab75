"""applications (the one registry of what users sign in to through twofa: OpenID Connect
clients now, SAML service providers later), oidc_codes (single-use authorization codes),
oidc_access_tokens (for userinfo), oidc_signing_keys (sealed private keys, rotated with
overlap) and oidc_subjects (the stable, opaque `sub` of each user).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=150), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("client_secret_hash", sa.String(length=64), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.JSON(), nullable=False),
        sa.Column("allowed_users", sa.JSON(), nullable=False),
        sa.Column("allowed_groups", sa.JSON(), nullable=False),
        sa.Column("second_factor_required", sa.Boolean(), nullable=False),
        sa.Column("skip_consent", sa.Boolean(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("client_id"),
    )
    op.create_table(
        "oidc_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("nonce", sa.String(length=500), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=True),
        _when("auth_time"),
        sa.Column("amr", sa.JSON(), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("redeemed_at", nullable=True),
        sa.Column("issued_jti", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_oidc_codes_application_id", "oidc_codes", ["application_id"])
    op.create_index("ix_oidc_codes_user_id", "oidc_codes", ["user_id"])
    op.create_index("ix_oidc_codes_expires_at", "oidc_codes", ["expires_at"])
    op.create_table(
        "oidc_access_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
        sa.UniqueConstraint("jti"),
    )
    op.create_index(
        "ix_oidc_access_tokens_application_id", "oidc_access_tokens", ["application_id"]
    )
    op.create_index("ix_oidc_access_tokens_user_id", "oidc_access_tokens", ["user_id"])
    op.create_index("ix_oidc_access_tokens_expires_at", "oidc_access_tokens", ["expires_at"])
    op.create_table(
        "oidc_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=8), nullable=False),
        sa.Column("private_jwk_sealed", sa.Text(), nullable=False),
        _when("created_at"),
        _when("retired_at", nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "oidc_subjects",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("subject"),
    )


def downgrade() -> None:
    op.drop_table("oidc_subjects")
    op.drop_table("oidc_signing_keys")
    op.drop_table("oidc_access_tokens")
    op.drop_table("oidc_codes")
    op.drop_table("applications")
