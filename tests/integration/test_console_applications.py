"""The console's Applications page over real HTTP: add an OpenID Connect client and see its
secret once (never on the list or the edit page), edit it, rotate its secret (the old one is
refused at the token endpoint from then on), remove it after a confirmation, with CSRF, errors
under their field and nothing saved, a 403 for a non-admin, and every change audited."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.console import Console, field_problem, field_value, start_console
from tests.support.gateway import csrf_from
from twofa.services.idp.applications import Application

PAGE = "/admin/applications"
CALLBACK = "https://jira.example.com/plugins/servlet/oidc/callback"


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator)


async def post_form(
    console: Console, path: str, client: httpx.AsyncClient | None = None, **fields: str
) -> httpx.Response:
    client = client or console.client
    page = await client.get(PAGE)
    return await client.post(path, data={**fields, "csrf_token": csrf_from(page.text)})


def jira(**changes: str) -> dict[str, str]:
    return {
        "name": "Jira",
        "redirect_uris": f"{CALLBACK}\nhttps://jira.example.com/other",
        "post_logout_redirect_uris": "https://jira.example.com/",
        "allowed_groups": "engineering, staff",
        "second_factor_required": "on",
        "skip_consent": "on",
        **changes,
    }


def shown_secret(page: str) -> str:
    found = re.search(r'<code id="client-secret">([^<]+)</code>', page)
    assert found, "no secret on the page"
    return html.unescape(found.group(1))


def textarea(page: str, name: str) -> str:
    found = re.search(rf'<textarea id="{name}" name="{name}"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, f"no textarea {name} on the page"
    return html.unescape(found.group(1))


async def saved(console: Console) -> list[Application]:
    return await console.query(lambda gateway: gateway.applications.applications())


async def add_jira(console: Console, **changes: str) -> tuple[Application, str]:
    answer = await post_form(console, PAGE, **jira(**changes))
    assert answer.status_code == 200, answer.text
    (application,) = await saved(console)
    return application, shown_secret(answer.text)


async def token_endpoint_says(console: Console, client_id: str, secret: str) -> str:
    """The token endpoint's error for a made-up code: `invalid_grant` once the client is
    authenticated, `invalid_client` when its secret is wrong."""
    async with httpx.AsyncClient(base_url=console.base_url) as relying_party:
        answer = await relying_party.post(
            "/oidc/token",
            auth=(client_id, secret),
            data={"grant_type": "authorization_code", "code": "made-up", "redirect_uri": CALLBACK},
        )
    error: str = answer.json()["error"]
    return error


async def test_an_added_application_shows_its_secret_once_and_never_again(
    console: Console,
) -> None:
    answer = await post_form(console, PAGE, **jira())
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    secret = shown_secret(answer.text)
    assert "Copy the client secret now: it will not be shown again." in answer.text
    (application,) = await saved(console)
    assert application.client_id in answer.text
    assert application.redirect_uris == (CALLBACK, "https://jira.example.com/other")
    assert application.allowed_groups == ("engineering", "staff")
    assert application.second_factor_required
    assert application.skip_consent
    assert not application.public

    listing = (await console.client.get(PAGE)).text
    edit_page = (await console.client.get(f"{PAGE}/{application.client_id}")).text
    assert application.client_id in listing
    assert secret not in listing
    assert secret not in edit_page
    assert await token_endpoint_says(console, application.client_id, secret) == "invalid_grant"


async def test_the_list_shows_each_applications_settings(console: Console) -> None:
    await add_jira(console, skip_consent="", second_factor_required="")
    page = html.unescape((await console.client.get(PAGE)).text)
    row = page.split('<table id="applications">', 1)[1].split("</table>", 1)[0]
    cells = [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in row.split("<td>")[1:]]
    assert cells[0:2] == ["Jira", "OpenID Connect"]
    assert cells[3:8] == [
        "confidential",
        f"{CALLBACK} https://jira.example.com/other",
        "groups: engineering, staff",
        "not required",
        "asked",
    ]


async def test_a_new_application_needs_a_second_factor_by_default(console: Console) -> None:
    page = (await console.client.get(PAGE)).text
    assert re.search(r'id="second_factor_required"[^>]*checked', page)
    assert not re.search(r'id="public"[^>]*checked', page)


async def test_a_bad_redirect_uri_is_named_under_its_field_and_nothing_is_saved(
    console: Console,
) -> None:
    answer = await post_form(
        console, PAGE, **jira(redirect_uris=f"{CALLBACK}\nhttp://jira.example.com/cb")
    )
    assert answer.status_code == 400
    assert "must use https" in field_problem(answer.text, "redirect_uris")
    assert "Nothing was saved" in answer.text
    assert field_value(answer.text, "name") == "Jira"
    assert "http://jira.example.com/cb" in textarea(answer.text, "redirect_uris")
    assert await saved(console) == []
    assert await console.audit("application") == []


async def test_a_public_client_has_no_secret_to_show_or_rotate(console: Console) -> None:
    answer = await post_form(console, PAGE, **jira(public="on"))
    assert answer.status_code == 200
    assert 'id="client-secret"' not in answer.text
    assert "has no secret" in answer.text
    (application,) = await saved(console)
    assert application.public
    rotated = await post_form(console, f"{PAGE}/{application.client_id}/rotate-secret")
    assert rotated.status_code == 400
    assert "is a public client: no secret" in html.unescape(rotated.text)


async def test_editing_saves_the_fields_and_keeps_the_client_id_and_secret(
    console: Console,
) -> None:
    application, secret = await add_jira(console)
    edit_page = await console.client.get(f"{PAGE}/{application.client_id}")
    assert field_value(edit_page.text, "name") == "Jira"
    assert textarea(edit_page.text, "redirect_uris") == (
        f"{CALLBACK}\nhttps://jira.example.com/other"
    )
    answer = await post_form(
        console,
        f"{PAGE}/{application.client_id}",
        **jira(name="Jira DC", redirect_uris=CALLBACK, allowed_users="alice", skip_consent=""),
    )
    assert answer.status_code == 303
    assert (
        "Application Jira DC saved" in (await console.client.get(answer.headers["location"])).text
    )
    (edited,) = await saved(console)
    assert (edited.client_id, edited.name) == (application.client_id, "Jira DC")
    assert edited.redirect_uris == (CALLBACK,)
    assert edited.allowed_users == ("alice",)
    assert not edited.skip_consent
    assert await token_endpoint_says(console, edited.client_id, secret) == "invalid_grant"


async def test_a_refused_edit_changes_nothing(console: Console) -> None:
    application, _ = await add_jira(console)
    await post_form(console, PAGE, **jira(name="Confluence"))
    answer = await post_form(
        console, f"{PAGE}/{application.client_id}", **jira(name="Confluence", allowed_users="x")
    )
    assert answer.status_code == 400
    assert "an application named 'Confluence' exists" in field_problem(answer.text, "name")
    assert field_value(answer.text, "allowed_users") == "x"
    jira_now = [app for app in await saved(console) if app.client_id == application.client_id]
    assert jira_now == [application]


async def test_rotating_the_secret_retires_the_old_one_at_the_token_endpoint(
    console: Console,
) -> None:
    application, old_secret = await add_jira(console)
    answer = await post_form(console, f"{PAGE}/{application.client_id}/rotate-secret")
    assert answer.status_code == 200
    new_secret = shown_secret(answer.text)
    assert new_secret != old_secret
    assert "it will not be shown again" in answer.text
    assert await token_endpoint_says(console, application.client_id, old_secret) == (
        "invalid_client"
    )
    assert await token_endpoint_says(console, application.client_id, new_secret) == (
        "invalid_grant"
    )
    assert new_secret not in (await console.client.get(PAGE)).text


async def test_removing_takes_a_confirmation(console: Console) -> None:
    application, _ = await add_jira(console)
    remove_url = f"{PAGE}/{application.client_id}/remove"
    unconfirmed = await post_form(console, remove_url)
    assert unconfirmed.status_code == 303
    assert unconfirmed.headers["location"] == remove_url
    assert await saved(console) == [application]

    confirm_page = await console.client.get(remove_url)
    assert "Remove application Jira?" in confirm_page.text
    assert 'name="confirm" value="yes"' in confirm_page.text
    confirmed = await post_form(console, remove_url, confirm="yes")
    assert confirmed.status_code == 303
    assert (
        "Application Jira removed" in (await console.client.get(confirmed.headers["location"])).text
    )
    assert await saved(console) == []


async def test_every_change_is_audited_as_the_admin(console: Console) -> None:
    application, _ = await add_jira(console)
    await post_form(console, f"{PAGE}/{application.client_id}", **jira(allowed_users="alice"))
    await post_form(console, f"{PAGE}/{application.client_id}/rotate-secret")
    await post_form(console, f"{PAGE}/{application.client_id}/remove", confirm="yes")
    rows = await console.audit("application")
    assert [row.outcome for row in rows] == ["added", "updated", "secret_rotated", "removed"]
    assert {row.username for row in rows} == {"admin"}
    assert {row.detail["client_id"] for row in rows} == {application.client_id}
    assert rows[1].detail["changed"] == ["allowed_users"]


async def test_an_unknown_client_id_is_a_404(console: Console) -> None:
    assert (await console.client.get(f"{PAGE}/no-such-client")).status_code == 404
    answer = await post_form(console, f"{PAGE}/no-such-client/remove", confirm="yes")
    assert answer.status_code == 404


async def test_a_form_without_the_csrf_token_is_refused_and_saves_nothing(
    console: Console,
) -> None:
    answer = await console.client.post(PAGE, data=jira())
    assert answer.status_code == 403
    assert await saved(console) == []


async def test_a_user_who_is_not_an_admin_gets_403_and_changes_nothing(console: Console) -> None:
    application, _ = await add_jira(console)
    async with console.signed_in("bob", "bob-password-1") as bob:
        csrf = csrf_from((await bob.get("/")).text)
        listing = await bob.get(PAGE)
        rotated = await bob.post(
            f"{PAGE}/{application.client_id}/rotate-secret", data={"csrf_token": csrf}
        )
        removed = await bob.post(
            f"{PAGE}/{application.client_id}/remove", data={"csrf_token": csrf, "confirm": "yes"}
        )
    assert [listing.status_code, rotated.status_code, removed.status_code] == [403, 403, 403]
    assert application.client_id not in listing.text
    assert await saved(console) == [application]
    assert [row.outcome for row in await console.audit("application")] == ["added"]
