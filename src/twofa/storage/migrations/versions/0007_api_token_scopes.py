"""api_tokens.scopes, owner_user_id and parent_id: what a token may do, the admin whose
account it stops with, and the token that made it (revoked with it, never outliving it).
Tokens made before keep every scope (they acted with admin rights); one made by an admin
(created_by names an admin account) answers to that admin from now on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

EVERY_SCOPE = "read users settings tokens"


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scopes", sa.String(length=100), nullable=False, server_default=EVERY_SCOPE)
        )
        batch_op.add_column(sa.Column("owner_user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_api_tokens_parent_id", ["parent_id"])
        batch_op.create_foreign_key(
            "fk_api_tokens_owner_user_id", "users", ["owner_user_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_api_tokens_owner_user_id", ["owner_user_id"])
    op.execute(
        "UPDATE api_tokens SET owner_user_id = "
        "(SELECT users.id FROM users WHERE users.username = api_tokens.created_by "
        "AND users.is_admin)"
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("scopes", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_api_tokens_parent_id")
        batch_op.drop_column("parent_id")
        batch_op.drop_index("ix_api_tokens_owner_user_id")
        batch_op.drop_constraint("fk_api_tokens_owner_user_id", type_="foreignkey")
        batch_op.drop_column("owner_user_id")
        batch_op.drop_column("scopes")
