"""Access rules managed on the console's Access Rules page, over real HTTP: add, edit, move and
delete with CSRF and per-field errors, every change audited, and forward-auth on another
gateway node over the same database following a change within about a second, with the
settings file's rules still deciding first."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.console import Console, field_problem, field_value, start_console
from tests.support.gateway import csrf_from
from tests.support.servers import serve_in_thread
from twofa.services.access.rules import ConsoleRule
from twofa.web.app import create_app

APP = "jira.example.com"
ACCESS = {
    "access": {
        "domains": [APP],
        "default_policy": "bypass",
        "rules": [{"domain": APP, "resources": ["/rest/*"], "policy": "bypass"}],
    }
}
PAGE = "/admin/access"


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator, extra=ACCESS)


@contextmanager
def second_node(console: Console) -> Iterator[str]:
    """Another gateway process on the same database, as behind a load balancer."""
    with serve_in_thread(create_app(console.settings)) as base_url:
        yield base_url


async def nginx_asks(base_url: str, path: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as proxy:
        answer = await proxy.get("/authz/nginx", headers={"X-Original-URL": f"https://{APP}{path}"})
        return answer.status_code


async def answer_within(base_url: str, path: str, wanted: int, seconds: float = 5.0) -> int:
    """What forward-auth answers for `path`, polled until it is `wanted` or the deadline."""
    deadline = time.monotonic() + seconds
    status = await nginx_asks(base_url, path)
    while status != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = await nginx_asks(base_url, path)
    return status


async def post_form(console: Console, path: str, **fields: str) -> httpx.Response:
    page = await console.client.get(PAGE)
    return await console.client.post(path, data={**fields, "csrf_token": csrf_from(page.text)})


async def add_rule(console: Console, **fields: str) -> httpx.Response:
    return await post_form(console, "/admin/access/rules", **{"domains": APP, **fields})


async def saved_rules(console: Console) -> list[ConsoleRule]:
    return await console.query(lambda gateway: gateway.access_rules.console_rules())


async def test_a_rule_added_in_the_console_applies_on_another_node_within_a_second(
    console: Console,
) -> None:
    with second_node(console) as node:
        assert await nginx_asks(node, "/browse/X-1") == 200  # the default policy: bypass
        added = await add_rule(console, policy="deny")
        assert added.status_code == 303, added.text
        assert await answer_within(node, "/browse/X-1", 403) == 403
        assert await nginx_asks(node, "/rest/api/2/issue") == 200, "the file's rule comes first"


async def test_a_deleted_rule_stops_applying_on_another_node(console: Console) -> None:
    with second_node(console) as node:
        await add_rule(console, policy="deny")
        assert await answer_within(node, "/browse/X-1", 403) == 403
        (rule,) = await saved_rules(console)
        deleted = await post_form(console, f"/admin/access/rules/{rule.id}/delete")
        assert deleted.status_code == 303
        assert await answer_within(node, "/browse/X-1", 200) == 200


async def test_the_page_lists_file_rules_read_only_then_console_rules(console: Console) -> None:
    await add_rule(console, policy="two_factor", paths="/secure/*", groups="staff")
    page = unescape((await console.client.get(PAGE)).text)
    assert "From the settings file" in page
    file_table, console_table = page.split('<table id="access-rules">', 1)[1].split(
        '<table id="console-access-rules">', 1
    )
    assert "/admin/access/rules/" not in file_table.split("</table>", 1)[0], "no actions"
    assert "/secure/*" in console_table
    assert "<td>2</td>" in console_table, "numbered after the file's rule"
    words = " ".join(re.sub(r"<[^>]+>", "", page).split())
    assert "the settings file's rules first (" in words
    assert "then the rules added here, in their order" in words


async def test_a_form_without_the_csrf_token_is_refused_and_saves_nothing(
    console: Console,
) -> None:
    answer = await console.client.post(
        "/admin/access/rules", data={"domains": APP, "policy": "deny"}
    )
    assert answer.status_code == 403
    assert await saved_rules(console) == []


async def test_a_bad_network_is_named_under_its_field_and_the_form_comes_back(
    console: Console,
) -> None:
    answer = await add_rule(console, policy="deny", networks="10.0.0.1/8", users="carol")
    assert answer.status_code == 400
    assert "did you mean 10.0.0.0/8" in field_problem(answer.text, "networks")
    assert field_problem(answer.text, "domains") == ""
    assert field_value(answer.text, "users") == "carol"
    assert await saved_rules(console) == []


async def test_an_unprotected_domain_is_named_under_its_field(console: Console) -> None:
    answer = await add_rule(console, policy="deny", domains="wiki.other.org")
    assert "not one of the protected domains" in field_problem(answer.text, "domains")


async def test_edit_move_and_delete_are_audited(console: Console) -> None:
    await add_rule(console, policy="deny", users="first")
    await add_rule(console, policy="deny", users="second")
    first, second = await saved_rules(console)
    edit_page = await console.client.get(f"/admin/access/rules/{first.id}")
    assert field_value(edit_page.text, "users") == "first"
    saved = await post_form(
        console, f"/admin/access/rules/{first.id}", domains=APP, policy="one_factor", users="1st"
    )
    assert saved.status_code == 303
    moved = await post_form(console, f"/admin/access/rules/{second.id}/move", position="1")
    assert moved.status_code == 303
    assert [rule.rule.users for rule in await saved_rules(console)] == [("second",), ("1st",)]
    await post_form(console, f"/admin/access/rules/{first.id}/delete")
    assert [rule.id for rule in await saved_rules(console)] == [second.id]
    rows = await console.audit("access_rule")
    assert [row.outcome for row in rows] == ["added", "added", "updated", "moved", "removed"]
    assert {row.username for row in rows} == {"admin"}


async def test_a_rule_deleted_meanwhile_is_a_404(console: Console) -> None:
    answer = await post_form(console, "/admin/access/rules/999/delete")
    assert answer.status_code == 404
    assert "no console access rule with id 999" in unescape(answer.text)


async def test_the_tester_names_a_console_rule(console: Console) -> None:
    await add_rule(console, policy="deny")
    page = await console.client.get(PAGE, params={"url": f"https://{APP}/browse/X-1"})
    text = unescape(page.text)
    assert "Rule #2 decides (console rule 1" in text
    page = await console.client.get(PAGE, params={"url": f"https://{APP}/rest/x"})
    assert "Rule #1 decides (rule 1 from the settings file)" in unescape(page.text)
