"""An admin (or whoever holds a stolen admin session or API token, or a shell on the gateway)
gives a local user a password an attacker would guess first: one of the most common passwords,
in any case, or one too short. Over real HTTP and the real CLI, on SQLite and PostgreSQL, every
way in refuses it, says why at the password field, and saves nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.conftest import RunningSimulator
from tests.integration.test_api import error_of, started_api
from tests.support.console import field_problem
from tests.support.gateway import gateway_settings, seed_users
from tests.support.servers import free_port
from tests.support.user_management import ADMIN, signed_in_admin
from twofa.cli.main import app
from twofa.config import Settings
from twofa.security.passwords import PasswordHashing
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users

pytestmark = pytest.mark.integration
VERIFY = PasswordHashing().verify  # a stored hash names its own parameters
COMMON = "this is one of the most common passwords: choose one nobody would guess"
GUESSABLE = {
    "Password1234": COMMON,
    "QWERTY123456": COMMON,
    "leavemealone": COMMON,
    "Tr0ub4dor&3": "at least 12 characters, this one has 11",
}


async def password_hashes(settings: Settings) -> dict[str, str | None]:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db() as db:
            return {user.username: user.password_hash for user in await Users(db).all()}
    finally:
        await gateway.close()


async def test_attack_admin_sets_common_password_in_the_console(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with signed_in_admin(database_url, simulator) as console:
        before = await password_hashes(console.settings)
        for password, why in GUESSABLE.items():
            answer = await console.post(
                "/admin/users/add", {"username": "mallory", "password": password}
            )

            assert answer.status_code == 400, password
            assert field_problem(answer.text, "password") == why
            assert field_problem(answer.text, "username") == ""
        assert await password_hashes(console.settings) == before
        assert "mallory" not in before
        assert not [
            row for row in await console.audit_rows("user_add") if row.username == "mallory"
        ]
        assert ADMIN in before


async def test_attack_admin_sets_common_password_through_the_api(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with started_api(database_url, simulator) as api:
        before = await password_hashes(api.settings)
        for password, why in GUESSABLE.items():
            created = await api.http.post(
                "/users", json={"username": "mallory", "password": password}
            )
            changed = await api.http.patch("/users/bob", json={"password": password})

            for answer in (created, changed):
                assert error_of(answer, 422, "invalid")["fields"] == {"password": why}
                assert password not in answer.text
        assert await password_hashes(api.settings) == before
        assert await api.audit("user_password") == []


def twofa(database_url: str, *args: str, input: str) -> Result:
    env = {"TWOFA_MODE": "dev", "TWOFA_DATABASE_URL": database_url}
    return CliRunner().invoke(app, list(args), env=env, input=input)


async def test_attack_admin_sets_common_password_with_the_cli(
    database_url: str, simulator: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):  # a developer's own TWOFA_* must not leak into the CLI
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)
    settings = gateway_settings(database_url, simulator, free_port())
    await seed_users(settings)
    before = await password_hashes(settings)
    for password, why in GUESSABLE.items():
        csv = tmp_path / "users.csv"
        csv.write_text(f"username,password\nmallory,{password}\n", encoding="utf-8")
        attempts = [
            ("user", "add", "mallory", "--password-stdin"),
            ("admin", "create", "mallory", "--password-stdin"),
            ("user", "passwd", "bob", "--password-stdin"),
            ("user", "import", str(csv)),
        ]
        for command in attempts:
            result = await asyncio.to_thread(twofa, database_url, *command, input=f"{password}\n")

            assert result.exit_code == 2, (command, result.output)
            assert f"password: {why}" in result.stderr, command
    assert await password_hashes(settings) == before


async def test_a_password_that_passes_the_rule_is_accepted(
    database_url: str, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)
    async with started_api(database_url, simulator) as api:
        created = await api.http.post(
            "/users", json={"username": "carol", "password": "violet-kettle-drums-7"}
        )
        assert created.status_code == 201, created.text
        changed = await asyncio.to_thread(
            twofa, database_url, "user", "passwd", "carol", "--password-stdin",
            input="amber-lantern-sails-4\n",
        )  # fmt: skip
        assert changed.exit_code == 0, changed.output
        stored = (await password_hashes(api.settings))["carol"]
    assert VERIFY(stored, "amber-lantern-sails-4")
