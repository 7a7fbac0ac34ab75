"""The argon2 cost of local users' passwords comes from `[passwords]`; after an operator raises
it and restarts, each user's stored hash is made again at their next successful sign-in (the one
moment twofa knows the password), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.gateway import PASSWORDS, running_gateway, sign_in
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users

pytestmark = pytest.mark.integration
FIRST = {"argon2_time_cost": 1, "argon2_memory_kib": 19_456, "argon2_parallelism": 1}
RAISED = {"argon2_time_cost": 2, "argon2_memory_kib": 24_576, "argon2_parallelism": 2}


async def stored_hash(settings: Settings, username: str) -> str:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db() as db:
            user = await Users(db).by_name(username)
        assert user is not None
        assert user.password_hash is not None
        return user.password_hash
    finally:
        await gateway.close()


def cost_of(password_hash: str) -> dict[str, int]:
    """The parameters a PHC string names: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`."""
    found = re.search(r"\$m=(\d+),t=(\d+),p=(\d+)\$", password_hash)
    assert found, password_hash
    memory, time, lanes = map(int, found.groups())
    return {"argon2_time_cost": time, "argon2_memory_kib": memory, "argon2_parallelism": lanes}


async def signs_in(base_url: str, password: str) -> bool:
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await sign_in(client, "bob", password)
        return answer.status_code == 303


def with_cost(cost: dict[str, Any]) -> dict[str, Any]:
    return {"passwords": cost}


async def test_a_raised_argon2_cost_rehashes_the_password_at_the_next_sign_in(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with running_gateway(database_url, simulator, extra=with_cost(FIRST)) as running:
        base_url, first = running
        made = await stored_hash(first, "bob")
        assert cost_of(made) == FIRST  # users are created at the configured cost
        assert await signs_in(base_url, PASSWORDS["bob"])
        assert await stored_hash(first, "bob") == made  # the cost in force: left alone

    async with running_gateway(
        database_url, simulator, seed=False, extra=with_cost(RAISED)
    ) as running:
        base_url, raised = running
        assert not await signs_in(base_url, "not-bobs-password-at-all")
        assert await stored_hash(raised, "bob") == made  # a wrong password changes nothing

        assert await signs_in(base_url, PASSWORDS["bob"])

        remade = await stored_hash(raised, "bob")
        assert cost_of(remade) == RAISED
        assert await signs_in(base_url, PASSWORDS["bob"])  # the new hash holds the same password
        assert await stored_hash(raised, "bob") == remade
