"""The grace period over HTTP: a user who must enrol may put it off as often as the Two Factor
Settings allow, and then must enrol."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from tests.conftest import RunningSimulator
from tests.support.console import start_console
from tests.support.gateway import csrf_from, sign_in
from twofa.services.settings.two_factor import TwoFactorConfig


async def test_user_may_postpone_enrolment_once_then_must_enrol(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    async with AsyncExitStack() as stack:
        grace = TwoFactorConfig(grace_postponements=1)
        console = await start_console(stack, tmp_path, simulator, two_factor=grace)
        alice = await stack.enter_async_context(
            httpx.AsyncClient(base_url=console.base_url, timeout=30)
        )

        await sign_in(alice, "alice")
        intro = await alice.get("/2fa")
        assert "Not now" in intro.text
        assert "1 more time" in intro.text
        postponed = await alice.post("/2fa/postpone", data={"csrf_token": csrf_from(intro.text)})
        assert postponed.status_code == 303
        home = await alice.get("/")
        assert home.status_code == 200

        await alice.post("/logout", data={"csrf_token": csrf_from(home.text)})
        await sign_in(alice, "alice")
        intro = await alice.get("/2fa")
        assert "Not now" not in intro.text
        setup = await alice.get("/2fa/duo/setup")
        refused = await alice.post("/2fa/postpone", data={"csrf_token": csrf_from(setup.text)})
        assert refused.status_code == 400
        assert "grace period is over" in refused.text
        assert (await alice.get("/")).status_code == 303

        audit = await console.client.get("/admin/audit", params={"kind": "enrolment"})
        assert "postponed" in audit.text


async def test_only_admins_see_the_console_link(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    async with AsyncExitStack() as stack:
        console = await start_console(stack, tmp_path, simulator)
        assert 'href="/admin">Admin console' in (await console.client.get("/")).text
        bob = await stack.enter_async_context(
            httpx.AsyncClient(base_url=console.base_url, timeout=30)
        )
        await sign_in(bob, "bob")
        assert "Admin console" not in (await bob.get("/")).text
