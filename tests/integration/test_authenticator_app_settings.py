"""The name authenticator apps show (the TOTP issuer) over real HTTP: the console's
Authenticator app page (admin-only, CSRF, a name apps would split refused with nothing saved,
audited), the next set-up page using the saved name, and
`twofa settings authenticator-app`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from html import unescape
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import RunningSimulator
from tests.support.console import Console, field_problem, field_value, start_console
from tests.support.gateway import csrf_from, sign_in
from twofa.cli.main import app
from twofa.services.second_factor.authenticator_options import AUDIT_KIND
from twofa.services.settings.two_factor import TwoFactorConfig

PAGE = "/admin/settings/authenticator-app"


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        app_only = TwoFactorConfig(methods=("totp",), first_method="totp")
        console = await start_console(stack, tmp_path, simulator, two_factor=app_only)
        yield console


async def save_issuer(console: Console, issuer: str) -> httpx.Response:
    page = await console.client.get(PAGE)
    return await console.client.post(
        PAGE, data={"issuer": issuer, "csrf_token": csrf_from(page.text)}
    )


async def issuer_on_set_up_page(console: Console) -> str:
    """Alice's first sign-in: the name her authenticator app will list the key under (the
    page shows the `issuer` it puts in the QR code's URI: see tests/unit/methods)."""
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as alice:
        assert (await sign_in(alice, "alice")).headers["location"] == "/2fa"
        page = await alice.get("/2fa/m/totp/enrol")
    assert page.status_code == 200, page.text
    return unescape(page.text.split('id="totp-issuer">', 1)[1].split("<", 1)[0])


async def test_the_page_shows_the_product_name_until_an_admin_changes_it(console: Console) -> None:
    page = await console.client.get(PAGE)
    assert page.status_code == 200
    assert field_value(page.text, "issuer") == "twofa"
    assert await issuer_on_set_up_page(console) == "twofa"


async def test_a_saved_name_is_what_the_next_set_up_hands_the_app(console: Console) -> None:
    saved = await save_issuer(console, "  Acme Jira ")
    assert saved.status_code == 303
    shown = await console.client.get(saved.headers["location"])
    assert "Keys set up from now on show this name" in shown.text
    assert field_value(shown.text, "issuer") == "Acme Jira"

    assert await issuer_on_set_up_page(console) == "Acme Jira"
    [event] = await console.audit(AUDIT_KIND)
    assert event.username == "admin"
    assert event.detail["before"] == {}
    assert event.detail["after"] == {"issuer": "Acme Jira"}


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("Acme:Jira", "no colon"),
        ("", "between 1 and 40 characters"),
        ("x" * 41, "between 1 and 40 characters"),
        ("Acme\u0007", "no colon and no control characters"),
    ],
)
async def test_a_name_apps_would_mangle_is_refused_and_nothing_saved(
    console: Console, typed: str, problem: str
) -> None:
    answer = await save_issuer(console, typed)

    assert answer.status_code == 400
    assert problem in field_problem(answer.text, "issuer")
    assert await console.audit(AUDIT_KIND) == []
    assert await issuer_on_set_up_page(console) == "twofa"


async def test_the_page_is_for_admins_only_and_needs_its_token(console: Console) -> None:
    assert (await console.client.post(PAGE, data={"issuer": "Acme"})).status_code == 403
    async with console.signed_in("bob", "bob-password-1") as bob:
        assert (await bob.get(PAGE)).status_code == 403
        home = await bob.get("/")
        forged = await bob.post(PAGE, data={"issuer": "Acme", "csrf_token": csrf_from(home.text)})
        assert forged.status_code == 403
    assert await console.audit(AUDIT_KIND) == []


def test_the_cli_shows_sets_and_refuses_by_option_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("TWOFA_"):  # a developer's own settings must not leak in
            monkeypatch.delenv(name)
    env = {"TWOFA_MODE": "dev", "TWOFA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"}

    def twofa(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args), env=env)
        return result.exit_code, result.output

    assert twofa("db", "upgrade")[0] == 0
    command = ("settings", "authenticator-app")
    assert twofa(*command, "show") == (0, "issuer: twofa\n")
    assert twofa(*command, "set", "--issuer", "Acme SSO") == (0, "saved: issuer Acme SSO\n")
    assert twofa(*command, "set", "--issuer", "Acme SSO") == (0, "unchanged: issuer Acme SSO\n")
    code, output = twofa(*command, "set", "--issuer", "Acme:SSO")
    assert code == 2
    assert "error: --issuer: no colon" in output
    assert "nothing was saved" in output
    assert twofa(*command, "show") == (0, "issuer: Acme SSO\n")
