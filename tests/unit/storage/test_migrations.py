"""Alembic migrations build exactly the schema in `tables.py`, on SQLite and PostgreSQL, and
`check_schema` refuses a database at any other revision with a message saying what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.databases import postgres_database
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
