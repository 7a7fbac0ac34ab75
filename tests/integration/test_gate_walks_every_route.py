"""No route enrols or verifies around the gate: every route of the app, walked with every
method code, as an attacker who has alice's password and nothing else.

The routes are read from the app itself, so a route added later is walked too (or must be
named in `NOT_WALKED` with the reason). After each request the attacker's browser must still
be waiting for a second factor; after the walk, alice's methods, her Duo enrolment, her
challenges and her phone must be as they were.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.gateway import (
    csrf_token_of,
    running_gateway,
    second_factor_state,
    sign_in,
)
from tests.support.totp_flow import enrol_alice
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.methods.registry import DUO_PUSH, LOCAL_METHOD_CODES
from twofa.web.app import create_app
from twofa.web.context import SESSION_COOKIE

EVERY_CODE = (DUO_PUSH, *LOCAL_METHOD_CODES, "no-such-method")
# What a route's path parameters are filled with: every method, the attacker's own open
# challenge (see `walk`) and a made-up one, every My 2FA action.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "code": EVERY_CODE,
    "challenge": ("{open_challenge}", "made-up-challenge"),
    "action": ("remove", "rename", "forget", "forget-all", "default", "add", "revoke"),
}
NOT_WALKED = {
    ("POST", "/login"): "the password step itself: the attacker has passed it already",
    ("POST", "/logout"): "ends the attacker's own session, which the walk goes on with",
}
LEFT_AS_IS = ("/static", "/openapi.json")  # files and the schema: no session involved


def app_routes(settings: Settings) -> list[tuple[str, str]]:
    """Every (method, path) the gateway's ASGI app serves, nested routers included."""

    def flatten(routes: Any) -> Iterator[Any]:
        for route in routes:
            if type(route).__name__ == "_IncludedRouter":  # FastAPI's lazily included router
                yield from flatten(route.effective_candidates())
            else:
                yield route

    found = []
    for route in flatten(create_app(settings).routes):
        path = getattr(route, "path", "")
        if path.startswith(LEFT_AS_IS):
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                found.append((method, path))
    return found


def concrete_paths(path: str, open_challenge: str) -> list[str]:
    names = re.findall(r"{(\w+)(?::\w+)?}", path)
    choices = [PARAMETERS.get(name, ("alice",)) for name in names]
    paths = []
    for values in itertools.product(*choices):
        concrete = path
        for name, value in zip(names, values, strict=True):
            value = value.replace("{open_challenge}", open_challenge)
            concrete = re.sub(r"{" + name + r"(?::\w+)?}", value, concrete, count=1)
        paths.append(concrete)
    return paths


@dataclass(frozen=True)
class AttackerSession:
    """A session that passed alice's password, with what its pages hand out: the CSRF token
    and the challenge of the one page it may open (the authenticator-app code page)."""

    open_challenge: str
    form: dict[str, str]
    headers: dict[str, str]

    @classmethod
    async def start(cls, attacker: httpx.AsyncClient, settings: Settings) -> AttackerSession:
        assert (await sign_in(attacker, "alice")).headers["location"] == "/2fa"
        page = await attacker.get("/2fa/m/totp")  # locked once the walk has guessed 5 times
        marker = 'name="challenge" value="'
        challenge = page.text.split(marker, 1)[1].split('"')[0] if marker in page.text else ""
        token = await csrf_token_of(settings, attacker.cookies[SESSION_COOKIE])
        form = {
            "csrf_token": token,
            "challenge": challenge,
            "code": "000000",
            "passcode": "123456",
            "remember": "on",
            "email": "mallory@example.com",
        }
        return cls(challenge, form, {"X-CSRF-Token": token})


async def alices_state(settings: Settings) -> tuple[list[str], str | None, list[tuple[str, str]]]:
    return await second_factor_state(settings, "alice")


@pytest.mark.parametrize(
    "allowed", [("totp",), (DUO_PUSH, *LOCAL_METHOD_CODES)], ids=["totp-only", "everything"]
)
async def test_no_route_enrols_or_verifies_around_the_gate(
    database_url: str, simulator: RunningSimulator, allowed: tuple[str, ...]
) -> None:
    async with (
        running_gateway(database_url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as alice,
        httpx.AsyncClient(base_url=base_url, timeout=30) as attacker,
    ):
        await allow_methods(settings, allowed, first_method="totp")
        await enrol_alice(alice)
        simulator.add_user("alice")  # a phone Duo knows for alice: a push would show
        before = await alices_state(settings)

        attempt = await AttackerSession.start(attacker, settings)
        walked = set()
        for method, path in app_routes(settings):
            if (method, path) in NOT_WALKED:
                continue
            for concrete in concrete_paths(path, attempt.open_challenge):
                if method == "GET":
                    answer = await attacker.get(concrete, headers={"Accept": "application/json"})
                else:
                    answer = await attacker.request(
                        method, concrete, data=attempt.form, headers=attempt.headers
                    )
                assert answer.status_code < 500, (method, concrete, answer.text[:300])
                home = await attacker.get("/")
                assert home.status_code == 303, f"{method} {concrete} signed the attacker in"
                waiting = await attacker.get("/2fa")
                if waiting.headers.get("location", "").startswith("/login"):
                    # the route ended the attacker's session (GET /login does): sign in anew
                    attempt = await AttackerSession.start(attacker, settings)
            walked.add((method, path))

        assert len(walked) > 90  # the pages, the console and the API, not a handful
        assert simulator.pending("alice") == []  # nothing reached her phone
        after = await alices_state(settings)
        assert after[:2] == before[:2] == (["totp"], None)
        opened = list(after[2])
        for challenge in before[2]:  # alice's own, from her set-up
            opened.remove(challenge)
        assert [c for c in opened if c[1] == "enrol"] == []  # no set-up was ever opened
