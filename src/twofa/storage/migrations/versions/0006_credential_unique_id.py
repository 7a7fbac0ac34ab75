"""credentials.unique_id: an id no two credentials of one method share (a security key's
credential id), so a key registered to one user is refused for any other, and two racing
enrolments of one key cannot both land

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 13:20:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unique_id", sa.String(length=1400), nullable=True))
    # Security keys registered before: their credential id, kept in the state. Should one id
    # appear twice (possible before this revision), the oldest row keeps it; the others stay
    # NULL rather than fail the upgrade, and still sign in as they did.
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, state FROM credentials WHERE method = 'webauthn' ORDER BY id")
    ).all()
    seen: set[str] = set()
    for row_id, state in rows:
        if isinstance(state, str):  # SQLite hands JSON back as text here
            state = json.loads(state)
        credential_id = (state or {}).get("credential_id")
        if not isinstance(credential_id, str) or credential_id in seen:
            continue
        seen.add(credential_id)
        connection.execute(
            sa.text("UPDATE credentials SET unique_id = :unique_id WHERE id = :id"),
            {"unique_id": credential_id, "id": row_id},
        )
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.create_index(
            "ux_credentials_method_unique_id", ["method", "unique_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_index("ux_credentials_method_unique_id")
        batch_op.drop_column("unique_id")
