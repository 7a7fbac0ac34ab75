"""What every integration module shares: the `integration` mark, and `database_url`, each
test run once on SQLite and once on a throwaway PostgreSQL database (a module that needs
something else defines its own)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, sqlite_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url:
        yield url
