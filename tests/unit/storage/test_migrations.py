"""Alembic migrations build exactly the schema in `tables.py`, on SQLite and PostgreSQL, and
`check_schema` refuses a database at any other revision with a message saying what to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.databases import postgres_database
from twofa.storage import oidc_tables, saml_tables  # noqa: F401 (their tables are in Base.metadata)
from twofa.storage.database import (
    SchemaError,
    check_schema,
    create_engine,
    current_revision,
    head_revision,
    upgrade,
)
from twofa.storage.tables import Base


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"


def columns_by_table(connection: Connection) -> dict[str, dict[str, bool]]:
    inspector = inspect(connection)
    return {
        table: {column["name"]: bool(column["nullable"]) for column in inspector.get_columns(table)}
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


def expected_columns() -> dict[str, dict[str, bool]]:
    return {
        table.name: {column.name: bool(column.nullable) for column in table.columns}
        for table in Base.metadata.sorted_tables
    }


def schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def assert_migrated_schema_matches_tables(engine: AsyncEngine) -> None:
    assert await upgrade(engine) == head_revision()
    async with engine.connect() as connection:
        assert await connection.run_sync(columns_by_table) == expected_columns()
        assert await connection.run_sync(schema_differences) == []
    assert await current_revision(engine) == head_revision()
    await check_schema(engine)


async def test_upgrade_on_sqlite_creates_every_table_with_its_columns(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        await assert_migrated_schema_matches_tables(engine)
    finally:
        await engine.dispose()


async def test_upgrade_on_postgresql_creates_every_table_with_its_columns() -> None:
    async with postgres_database() as url:  # already migrated: upgrading again is a no-op
        engine = create_engine(url)
        try:
            await assert_migrated_schema_matches_tables(engine)
        finally:
            await engine.dispose()


async def test_upgrade_twice_is_harmless(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        await upgrade(engine)
        await upgrade(engine)
        await check_schema(engine)
    finally:
        await engine.dispose()


async def test_check_schema_refuses_an_empty_database(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        assert await current_revision(engine) is None
        with pytest.raises(SchemaError, match="twofa db upgrade"):
            await check_schema(engine)
    finally:
        await engine.dispose()


async def test_check_schema_refuses_a_newer_revision(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        await upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
        with pytest.raises(SchemaError, match="newer") as caught:
            await check_schema(engine)
        assert "ffff9999" in str(caught.value)
        assert head_revision() in str(caught.value)
    finally:
        await engine.dispose()


async def test_sqlite_foreign_keys_are_enforced(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()


async def security_keys_before_0006(engine: AsyncEngine) -> None:
    """Three keys as revision 0005 stored them: one credential id registered twice (possible
    then), one once."""
    await upgrade(engine, revision="0005")
    async with engine.begin() as connection:
        for user_id, name in ((1, "alice"), (2, "bob")):
            await connection.execute(
                text(
                    "INSERT INTO users (id, username, display_name, email, enabled, is_admin,"
                    " twofa_enabled, created_at, enrolment_postponements, directory)"
                    " VALUES (:id, :name, '', '', true, false, true, :at, 0, 'local')"
                ),
                {"id": user_id, "name": name, "at": datetime(2026, 12, 1, tzinfo=UTC)},
            )
        for row_id, user_id, credential_id in ((1, 1, "KEY-A"), (2, 2, "KEY-A"), (3, 2, "KEY-B")):
            await connection.execute(
                text(
                    "INSERT INTO credentials (id, user_id, method, label, state, version,"
                    " created_at) VALUES (:id, :user_id, 'webauthn', '', :state, 1, :at)"
                ),
                {
                    "id": row_id,
                    "user_id": user_id,
                    "state": json.dumps({"credential_id": credential_id, "sign_count": 0}),
                    "at": datetime(2026, 12, 1, tzinfo=UTC),
                },
            )


async def assert_0006_backfills_unique_ids(engine: AsyncEngine) -> None:
    await security_keys_before_0006(engine)
    await upgrade(engine)
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT id, unique_id FROM credentials ORDER BY id"))
        # The oldest row keeps a duplicated id; the later one stays usable, without it.
        assert rows.all() == [(1, "KEY-A"), (2, None), (3, "KEY-B")]


async def test_0006_backfills_security_key_ids_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path))
    try:
        await assert_0006_backfills_unique_ids(engine)
    finally:
        await engine.dispose()


async def test_0006_backfills_security_key_ids_on_postgresql() -> None:
    async with postgres_database(migrated=False) as url:
        engine = create_engine(url)
        try:
            await assert_0006_backfills_unique_ids(engine)
        finally:
            await engine.dispose()
