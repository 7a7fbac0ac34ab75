"""Fixtures shared by the unit tests that need a real (SQLite) database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.databases import sqlite_database
from twofa.storage.database import create_engine, session_factory


@pytest.fixture
async def factory(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a migrated SQLite database of the test's own, with a class of their own
    (the listeners a test registers stay with it)."""
    async with sqlite_database(tmp_path) as url:
        engine = create_engine(url)
        try:
            yield session_factory(engine)
        finally:
            await engine.dispose()
