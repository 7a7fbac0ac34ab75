"""The console's Access Rules page: the settings file's rules listed, and the tester."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.console import Console, start_console
from tests.support.gateway import sign_in

ACCESS = {
    "access": {
        "domains": ["jira.example.com"],
        "rules": [
            {"domain": "jira.example.com", "resources": ["/rest/*"], "policy": "bypass"},
            {"domain": "jira.example.com", "groups": ["contractors"], "policy": "deny"},
            {"domain": "jira.example.com", "policy": "two_factor"},
        ],
    }
}


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator, extra=ACCESS)


async def test_the_page_lists_the_rules_in_order(console: Console) -> None:
    page = unescape((await console.client.get("/admin/access")).text)
    assert "Access Rules" in page
    rows = page.split('<table id="access-rules">', 1)[1]
    assert rows.index("bypass") < rows.index("deny") < rows.index("two_factor")


async def test_the_tester_names_the_deciding_rule(console: Console) -> None:
    page = await console.client.get(
        "/admin/access", params={"url": "https://jira.example.com/browse/X-1", "user": "alice"}
    )
    assert "Rule #3 decides" in unescape(page.text)
    assert "two_factor" in page.text


async def test_the_tester_reports_an_unknown_user(console: Console) -> None:
    page = await console.client.get(
        "/admin/access", params={"url": "https://jira.example.com/", "user": "nobody"}
    )
    assert "no user 'nobody'" in unescape(page.text)


async def test_a_non_admin_gets_403(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as bob:
        await sign_in(bob, "bob")
        assert (await bob.get("/admin/access")).status_code == 403
