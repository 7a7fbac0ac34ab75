"""The `twofa` command run in-process against a fresh SQLite file, with helpers that read the
database back through a `Gateway` to check what the commands wrote."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from twofa.cli.main import app
from twofa.config import load_settings
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users
from twofa.storage.tables import AuditRow, UserRow

T = TypeVar("T")


@dataclass(frozen=True)
class TwofaCli:
    """Runs `twofa …` with this test's environment; `query` reads the same database."""

    runner: CliRunner
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, list(args), env=self.env, input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        """Runs a command that must succeed, showing its output when it does not."""
        result = self(*args, input=input)
        assert result.exit_code == 0, f"twofa {' '.join(args)}: {result.output}"
        return result

    def query(self, action: Callable[[Gateway], Awaitable[T]]) -> T:
        async def run() -> T:
            gateway = await Gateway.start(load_settings(environ=self.env))
            try:
                return await action(gateway)
            finally:
                await gateway.close()

        return asyncio.run(run())

    def user_row(self, username: str) -> UserRow:
        async def read(gateway: Gateway) -> UserRow:
            async with gateway.db() as db:
                row = await Users(db).by_name(username)
            assert row is not None, f"no user {username!r} in the database"
            return row

        return self.query(read)

    def audit_kinds(self, username: str | None = None) -> list[str]:
        return [row.kind for row in self.audit_rows(username)]

    def audit_rows(self, username: str | None = None) -> Sequence[AuditRow]:
        async def read(gateway: Gateway) -> Sequence[AuditRow]:
            query = select(AuditRow).order_by(AuditRow.id)
            if username is not None:
                query = query.where(AuditRow.username == username)
            async with gateway.db() as db:
                return (await db.scalars(query)).all()

        return self.query(read)


@pytest.fixture
def fresh_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TwofaCli:
    """A CLI on a database file that has not been migrated yet."""
    # A developer's own TWOFA_* variables would leak into these runs: only this test's count.
    for name in list(os.environ):
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)
    env = {
        "TWOFA_MODE": "dev",
        "TWOFA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'twofa.db'}",
        "COLUMNS": "200",  # keeps usage-error panels on one line
    }
    return TwofaCli(CliRunner(), env)


@pytest.fixture
def cli(fresh_cli: TwofaCli) -> TwofaCli:
    """A CLI on a database migrated with `twofa db upgrade`."""
    fresh_cli.ok("db", "upgrade")
    return fresh_cli


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text("file-password-1\n", encoding="utf-8")
    return path
