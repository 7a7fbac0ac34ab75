"""Fresh, migrated databases for tests: a SQLite file, or a new PostgreSQL database on the
server at 127.0.0.1:5432 (dropped afterwards). Without PostgreSQL the test skips, except in CI
(`CI_REQUIRE_ALL_SERVICES=1`), where a missing server is a failure."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from twofa.storage.database import create_engine, upgrade

POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_or_skip(reason: str) -> None:
    if os.environ.get("CI_REQUIRE_ALL_SERVICES") == "1":
        pytest.fail(f"{reason} (required in CI: CI_REQUIRE_ALL_SERVICES=1)")
    pytest.skip(reason)


async def migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def sqlite_database(directory: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{directory / 'twofa.db'}"
    await migrate(url)
    yield url


@asynccontextmanager
async def postgres_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """A throwaway database, dropped afterwards; `migrated=False` leaves it empty."""
    try:
        admin = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        require_or_skip(f"PostgreSQL is not reachable at {POSTGRES_DSN}: {exc}")
        raise AssertionError("unreachable") from exc
    name = f"twofa_test_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
