"""Alembic environment: migrations run on the connection twofa hands over (see database.py)."""

from __future__ import annotations

from alembic import context

from twofa.storage import oidc_tables, saml_tables  # noqa: F401 (their tables are in Base.metadata)
from twofa.storage.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `twofa db upgrade`, which provides the connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
