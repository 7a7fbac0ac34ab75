"""OpenID Connect grants tied to the twofa session that made them, back-channel logout and
consent: `applications.backchannel_logout_uri` (where a relying party hears that a session
ended), `oidc_codes.session_id` and `oidc_refresh_tokens.session_id` (the `sessions.id` that
signed in; no foreign key, since sessions rows are deleted when they end and the grants must
still be found then), and `oidc_consents` (what a user agreed to share with an application).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("backchannel_logout_uri", sa.Text(), nullable=True))
    for table in ("oidc_codes", "oidc_refresh_tokens"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("session_id", sa.String(length=64), nullable=True))
        op.create_index(f"ix_{table}_session_id", table, ["session_id"])
    op.create_table(
        "oidc_consents",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "application_id"),
    )


def downgrade() -> None:
    op.drop_table("oidc_consents")
    for table in ("oidc_refresh_tokens", "oidc_codes"):
        op.drop_index(f"ix_{table}_session_id", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("session_id")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("backchannel_logout_uri")
