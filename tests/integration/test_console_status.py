"""The console's Status page: `twofa doctor` behind a button, for admins only, on a POST
with the CSRF token (the checks reach out to Duo and the mail server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.console import Console, start_console
from tests.support.gateway import csrf_from, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator)


def rows(page: str) -> dict[str, str]:
    """Each finding's part and state, as the table shows them."""
    table = unescape(page).split('<table id="status-findings">', 1)[1].split("</table>", 1)[0]
    found = {}
    for row in table.split("<tr class=")[1:]:
        part = row.split('<th scope="row">', 1)[1].split("</th>", 1)[0]
        state = row.split("<td>", 1)[1].split("</td>", 1)[0]
        found[part] = state
    return found


async def test_the_page_runs_the_checks_on_the_button(console: Console) -> None:
    page = await console.client.get("/admin/status")
    assert page.status_code == 200
    assert "Check now" in page.text
    assert 'id="status-findings"' not in page.text  # nothing reaches out on a GET

    checked = await console.client.post("/admin/status", data={"csrf_token": csrf_from(page.text)})

    assert checked.status_code == 200
    assert rows(checked.text) == {
        "database": "ok",
        "Duo": "ok",  # the simulator's keys, from the settings file
        "Duo alerts": "ok",
        "sign-in attacks": "ok",
        "mail server": "not set up",
        "secret keys": "ok",
        "clock": "ok",
        "change feed": "ok",  # the local sockets between processes on SQLite
    }
    assert "No check failed." in checked.text


async def test_a_failing_part_is_named_in_the_summary(console: Console) -> None:
    page = await console.client.get("/admin/settings/email")
    saved = await console.client.post(
        "/admin/settings/email",
        data={
            "csrf_token": csrf_from(page.text),
            "host": "127.0.0.1",
            "port": "9",  # discard: nothing listens there
            "security": "none",
            "from_address": "twofa@example.test",
            "timeout_s": "2",
        },
    )
    assert saved.status_code in (200, 303), saved.text

    page = await console.client.get("/admin/status")
    checked = await console.client.post("/admin/status", data={"csrf_token": csrf_from(page.text)})

    assert rows(checked.text)["mail server"] == "FAILED"
    assert "1 of 8 checks failed: mail server." in unescape(checked.text)


async def test_the_checks_need_the_csrf_token(console: Console) -> None:
    answer = await console.client.post("/admin/status", data={"csrf_token": "forged"})
    assert answer.status_code in (400, 403)
    assert 'id="status-findings"' not in answer.text


async def test_a_non_admin_gets_403(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as bob:
        await sign_in(bob, "bob")
        assert (await bob.get("/admin/status")).status_code == 403
        assert (await bob.post("/admin/status", data={})).status_code == 403
