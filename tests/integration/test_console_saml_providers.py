"""SAML service providers on the console's Applications page over real HTTP: add one from its
metadata pasted or uploaded (a multipart form, as the browser sends it), listed beside the
OpenID Connect clients with its protocol, entity id and ACS URLs; bad metadata, a registered
entity id and a taken name refused under their field with nothing saved; edit (its metadata
replaced too), remove after a confirmation, a 403 for a non-admin, and every change audited."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_saml_idp import ServiceProviderClient, sp_client
from tests.support.console import Console, field_problem, field_value, start_console
from tests.support.gateway import csrf_from
from twofa.services.idp.saml.registry import ServiceProvider
from twofa.services.idp.saml.wiring import build_saml
from twofa.services.runtime import Gateway

PAGE = "/admin/applications"
ADD = f"{PAGE}/saml"
NO_FILE = ("", b"", "application/octet-stream")  # what a browser sends when no file is chosen


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator)


@pytest.fixture
def jira_sp(tmp_path: Path) -> ServiceProviderClient:
    return sp_client(tmp_path, "jira", None)


async def post_multipart(
    console: Console,
    path: str,
    fields: dict[str, str],
    upload: tuple[str, bytes, str] = NO_FILE,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    client = client or console.client
    csrf = csrf_from((await client.get(PAGE)).text)
    return await client.post(
        path, data={**fields, "csrf_token": csrf}, files={"sp_metadata_file": upload}
    )


def provider_form(**changes: str) -> dict[str, str]:
    return {
        "sp_name": "Jira",
        "sp_metadata": "",
        "sp_allowed_groups": "jira-users, staff",
        "sp_second_factor_required": "on",
        "sp_name_id_format": "email",
        **changes,
    }


async def saved(console: Console) -> list[ServiceProvider]:
    async def providers(gateway: Gateway) -> list[ServiceProvider]:
        settings = gateway.settings
        saml = build_saml(gateway.db, gateway.clock, settings.secret_keys, settings.public_url)
        return await saml.providers.service_providers()

    return await console.query(providers)


async def add_by_paste(
    console: Console, sp: ServiceProviderClient, **changes: str
) -> httpx.Response:
    return await post_multipart(console, ADD, provider_form(sp_metadata=sp.metadata_xml, **changes))


def table_rows(page: str) -> dict[str, list[str]]:
    """Each row of the applications table by its name: the text of its cells."""
    table = html.unescape(page).split('<table id="applications">', 1)[1].split("</table>", 1)[0]
    rows: dict[str, list[str]] = {}
    for row in table.split("<tr id=")[1:]:
        cells = [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in row.split("<td>")[1:]]
        rows[cells[0]] = cells
    return rows


async def test_a_provider_added_by_pasting_its_metadata_is_listed_with_protocol_and_acs(
    console: Console, jira_sp: ServiceProviderClient
) -> None:
    answer = await add_by_paste(console, jira_sp)
    assert answer.status_code == 303, answer.text
    listing = await console.client.get(answer.headers["location"])
    assert "SAML service provider Jira added." in listing.text
    (provider,) = await saved(console)
    assert provider.entity_id == jira_sp.entity_id
    assert [endpoint["location"] for endpoint in provider.acs_endpoints] == [jira_sp.acs_url]
    assert provider.application.allowed_groups == ("jira-users", "staff")
    assert provider.application.second_factor_required
    assert provider.name_id_format == "email"
    assert provider.authn_requests_signed
    row = table_rows(listing.text)["Jira"]
    assert row[1:8] == [
        "SAML",
        jira_sp.entity_id,
        "NameID: username",
        jira_sp.acs_url,
        "groups: jira-users, staff",
        "required",
        "not asked",
    ]
    assert "Rotate secret" not in row[8]


async def test_a_provider_added_by_uploading_its_metadata_file(
    console: Console, jira_sp: ServiceProviderClient
) -> None:
    upload = ("jira-sp.xml", jira_sp.metadata_xml.encode(), "application/samlmetadata+xml")
    answer = await post_multipart(
        console, ADD, provider_form(sp_name_id_format="persistent"), upload
    )
    assert answer.status_code == 303, answer.text
    (provider,) = await saved(console)
    assert (provider.application.name, provider.entity_id) == ("Jira", jira_sp.entity_id)
    assert provider.name_id_format == "persistent"
    assert provider.metadata_xml == jira_sp.metadata_xml.strip()


async def test_the_form_needs_a_second_factor_and_a_persistent_nameid_by_default(
    console: Console,
) -> None:
    page = (await console.client.get(PAGE)).text
    assert 'enctype="multipart/form-data" action="/admin/applications/saml"' in page
    assert re.search(r'id="sp_second_factor_required"[^>]*checked', page)
    assert re.search(r'id="sp_name_id_format-persistent"[^>]*checked', page)
    assert not re.search(r'id="sp_name_id_format-email"[^>]*checked', page)


async def test_the_page_shows_the_idp_metadata_url_to_copy(console: Console) -> None:
    page = (await console.client.get(PAGE)).text
    expected = console.settings.public_url.rstrip("/") + "/saml/metadata"
    assert f'<code id="idp-metadata-url">{expected}</code>' in page
    metadata = await console.client.get("/saml/metadata")
    assert f'entityID="{expected}"' in metadata.text


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ("<not-xml", "the metadata cannot be read"),
        ("", "the metadata cannot be read"),
        (
            '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
            'entityID="https://jira.example.com"><md:SPSSODescriptor '
            'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            "</md:SPSSODescriptor></md:EntityDescriptor>",
            "no AssertionConsumerService",
        ),
    ],
)
async def test_bad_metadata_is_refused_under_its_field_and_nothing_is_saved(
    console: Console, metadata: str, problem: str
) -> None:
    answer = await post_multipart(console, ADD, provider_form(sp_metadata=metadata))
    assert answer.status_code == 400
    assert problem in field_problem(answer.text, "sp_metadata")
    assert "Nothing was saved" in answer.text
    assert field_value(answer.text, "sp_name") == "Jira"
    assert field_value(answer.text, "sp_allowed_groups") == "jira-users, staff"
    assert await saved(console) == []
    assert await console.audit("application") == []


async def test_a_file_that_is_not_text_is_refused(console: Console) -> None:
    upload = ("jira.xml", b"\xff\xfe\x00<", "application/xml")
    answer = await post_multipart(console, ADD, provider_form(), upload)
    assert answer.status_code == 400
    assert "not UTF-8 text" in field_problem(answer.text, "sp_metadata")
    assert await saved(console) == []


async def test_a_registered_entity_id_or_a_taken_name_is_refused(
    console: Console, jira_sp: ServiceProviderClient, tmp_path: Path
) -> None:
    assert (await add_by_paste(console, jira_sp)).status_code == 303
    again = await add_by_paste(console, jira_sp, sp_name="Jira again")
    assert again.status_code == 400
    assert f"entity id {jira_sp.entity_id!r} is registered" in field_problem(
        again.text, "sp_metadata"
    )
    other = sp_client(tmp_path, "confluence", None)
    same_name = await add_by_paste(console, other)
    assert same_name.status_code == 400
    assert "an application named 'Jira' exists" in field_problem(same_name.text, "sp_name")
    assert [provider.application.name for provider in await saved(console)] == ["Jira"]
    assert [row.outcome for row in await console.audit("application")] == ["added"]


async def test_editing_saves_the_settings_and_replaces_the_metadata(
    console: Console, jira_sp: ServiceProviderClient, tmp_path: Path
) -> None:
    await add_by_paste(console, jira_sp)
    (added,) = await saved(console)
    edit_url = f"{PAGE}/{added.application.client_id}"
    edit_page = (await console.client.get(edit_url)).text
    assert "Edit Jira (SAML service provider)" in edit_page
    assert field_value(edit_page, "sp_allowed_groups") == "jira-users, staff"
    assert re.search(r'id="sp_name_id_format-email"[^>]*checked', edit_page)
    assert 'id="redirect_uris"' not in edit_page  # only the SAML form while it is edited

    kept = await post_multipart(
        console, edit_url, provider_form(sp_name="Jira DC", sp_allowed_users="alice")
    )
    assert kept.status_code == 303, kept.text
    assert (
        "SAML service provider Jira DC saved"
        in (await console.client.get(kept.headers["location"])).text
    )
    (edited,) = await saved(console)
    assert (edited.application.client_id, edited.application.name) == (
        added.application.client_id,
        "Jira DC",
    )
    assert edited.application.allowed_users == ("alice",)
    assert edited.entity_id == jira_sp.entity_id  # no metadata given: kept

    moved = sp_client(tmp_path, "jira-new", None)
    upload = ("new.xml", moved.metadata_xml.encode(), "application/xml")
    replaced = await post_multipart(
        console, edit_url, provider_form(sp_name="Jira DC", sp_second_factor_required=""), upload
    )
    assert replaced.status_code == 303, replaced.text
    (now,) = await saved(console)
    assert now.application.client_id == added.application.client_id
    assert now.entity_id == moved.entity_id
    assert [endpoint["location"] for endpoint in now.acs_endpoints] == [moved.acs_url]
    assert not now.application.second_factor_required
    rows = await console.audit("application")
    assert [row.outcome for row in rows] == ["added", "updated", "updated"]
    assert rows[1].detail["changed"] == ["name", "allowed_users"]
    assert {"second_factor_required", "entity_id", "metadata_xml", "acs_endpoints"} <= set(
        rows[2].detail["changed"]
    )


async def test_a_refused_edit_changes_nothing(
    console: Console, jira_sp: ServiceProviderClient, tmp_path: Path
) -> None:
    await add_by_paste(console, jira_sp)
    other = sp_client(tmp_path, "confluence", None)
    await add_by_paste(console, other, sp_name="Confluence")
    before = await saved(console)
    jira = next(sp for sp in before if sp.application.name == "Jira")
    edit_url = f"{PAGE}/{jira.application.client_id}"
    taken = await post_multipart(
        console, edit_url, provider_form(sp_metadata=other.metadata_xml, sp_allowed_users="x")
    )
    assert taken.status_code == 400
    assert "is registered" in field_problem(taken.text, "sp_metadata")
    assert field_value(taken.text, "sp_allowed_users") == "x"
    unreadable = await post_multipart(console, edit_url, provider_form(sp_metadata="<nope"))
    assert "cannot be read" in field_problem(unreadable.text, "sp_metadata")
    assert await saved(console) == before


async def test_removing_takes_a_confirmation_and_is_audited(
    console: Console, jira_sp: ServiceProviderClient
) -> None:
    await add_by_paste(console, jira_sp)
    (provider,) = await saved(console)
    remove_url = f"{PAGE}/{provider.application.client_id}/remove"
    confirm_page = await console.client.get(remove_url)
    assert "Remove application Jira?" in confirm_page.text
    assert "persistent NameIDs" in confirm_page.text
    unconfirmed = await post_multipart(console, remove_url, {})
    assert unconfirmed.status_code == 303
    assert await saved(console) == [provider]
    confirmed = await post_multipart(console, remove_url, {"confirm": "yes"})
    assert confirmed.status_code == 303
    assert (
        "Application Jira removed" in (await console.client.get(confirmed.headers["location"])).text
    )
    assert await saved(console) == []
    rows = await console.audit("application")
    assert [row.outcome for row in rows] == ["added", "removed"]
    assert {row.username for row in rows} == {"admin"}
    assert {row.detail["protocol"] for row in rows} == {"saml"}
    assert {row.detail["entity_id"] for row in rows} == {jira_sp.entity_id}
    assert {row.detail["client_id"] for row in rows} == {provider.application.client_id}


async def test_both_protocols_are_listed_with_their_protocol(
    console: Console, jira_sp: ServiceProviderClient
) -> None:
    await add_by_paste(console, jira_sp, sp_name="Jira SAML")
    csrf = csrf_from((await console.client.get(PAGE)).text)
    oidc = {
        "name": "Grafana",
        "redirect_uris": "https://grafana.example.com/cb",
        "csrf_token": csrf,
    }
    assert (await console.client.post(PAGE, data=oidc)).status_code == 200
    rows = table_rows((await console.client.get(PAGE)).text)
    assert (rows["Jira SAML"][1], rows["Grafana"][1]) == ("SAML", "OpenID Connect")
    assert rows["Grafana"][4] == "https://grafana.example.com/cb"


async def test_a_user_who_is_not_an_admin_gets_403_and_changes_nothing(
    console: Console, jira_sp: ServiceProviderClient
) -> None:
    await add_by_paste(console, jira_sp)
    (provider,) = await saved(console)
    client_id = provider.application.client_id
    async with console.signed_in("bob", "bob-password-1") as bob:
        csrf = csrf_from((await bob.get("/")).text)
        fields = {**provider_form(sp_metadata=jira_sp.metadata_xml), "csrf_token": csrf}
        answers = [
            await bob.get(f"{PAGE}/{client_id}"),
            await bob.post(ADD, data={**fields, "sp_name": "Mine"}),
            await bob.post(f"{PAGE}/{client_id}", data={**fields, "sp_name": "Mine"}),
            await bob.post(
                f"{PAGE}/{client_id}/remove", data={"csrf_token": csrf, "confirm": "yes"}
            ),
        ]
    assert [answer.status_code for answer in answers] == [403, 403, 403, 403]
    assert await saved(console) == [provider]
    assert [row.outcome for row in await console.audit("application")] == ["added"]
