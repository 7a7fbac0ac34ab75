"""Security keys over real HTTP, with a software key standing in for the browser and the key:
set up as the first method, sign-in with it (each answer once, never from another origin),
renamed on My 2FA, two keys per user (never the same key twice), a key added later only
after confirming with the first, and removing one after confirming with the other."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.authenticator_webauthn import (
    KeyAlreadyRegistered,
    SoftwareKey,
    assertion_response,
    b64url,
    options_on_page,
    registration_response,
    site_of,
)
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway, sign_in
from tests.support.totp_flow import challenge_from, sign_out
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow, CredentialRow, SessionRow

WRONG = "That security key didn't work. Try again or use another method."
ENROL, VERIFY = "/2fa/m/webauthn/enrol", "/2fa/m/webauthn"
Site = tuple[httpx.AsyncClient, Settings]


@pytest.fixture(params=["sqlite", "postgresql"])
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Site]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with (
        factory as url,
        running_gateway(url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await allow_methods(settings, ("webauthn", "totp"), first_method="webauthn")
        yield client, settings


async def register_key(
    client: httpx.AsyncClient, settings: Settings, name: str = ""
) -> tuple[SoftwareKey, httpx.Response]:
    """Opens the set-up page, lets the key answer it, posts the form as webauthn.js does."""
    page = await client.get(ENROL)
    assert page.status_code == 200, page.text
    origin, rp_id = site_of(settings.public_url)
    credential, key = registration_response(options_on_page(page.text), origin, rp_id)
    answer = await client.post(
        ENROL,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "credential": credential,
            "name": name,
        },
    )
    return key, answer


async def enrol_alice(client: httpx.AsyncClient, settings: Settings, name: str = "") -> SoftwareKey:
    """Alice's first sign-in: she registers a key, which signs her in."""
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
    intro = await client.get("/2fa")
    assert f'href="{ENROL}"' in intro.text
    key, answer = await register_key(client, settings, name)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/2fa/after?new=1"
    return key


async def answer_with(
    client: httpx.AsyncClient, settings: Settings, key: SoftwareKey, origin: str | None = None
) -> httpx.Response:
    page = await client.get(VERIFY)
    assert page.status_code == 200, page.text
    credential = assertion_response(
        options_on_page(page.text), key, origin or site_of(settings.public_url)[0]
    )
    return await client.post(
        VERIFY,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "credential": credential,
        },
    )


async def sign_in_with(
    client: httpx.AsyncClient, settings: Settings, key: SoftwareKey
) -> httpx.Response:
    await sign_out(client)
    await sign_in(client, "alice")
    assert (await client.get("/2fa")).headers["location"] == VERIFY
    return await answer_with(client, settings, key)


def credential_rows(page: str) -> dict[str, str]:
    """My 2FA's security keys: label shown → credential id."""
    rows: dict[str, str] = {}
    for row in page.split('<tr data-method="webauthn" data-credential="')[1:]:
        credential_id = row.split('"', 1)[0]
        label = unescape(row.split("</strong>: ", 1)[1].split("\n", 1)[0].strip())
        rows[label] = credential_id
    return rows


async def age_second_factor(settings: Settings) -> None:
    """Moves every session's second factor 11 minutes back: no longer fresh enough to change
    methods without confirming again."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            for row in (await db.scalars(select(SessionRow))).all():
                if row.second_factor_at is not None:
                    row.second_factor_at -= timedelta(minutes=11)
    finally:
        await gateway.close()


async def test_first_sign_in_registers_a_key_and_signs_in(site: Site) -> None:
    client, settings = site
    await enrol_alice(client, settings)

    assert (await client.get("/2fa/after?new=1")).headers["location"] == "/"
    home = await client.get("/")
    assert home.status_code == 200
    assert "Alice Liddell" in home.text
    mine = await client.get("/my-2fa")
    assert credential_rows(mine.text).keys() == {"Security key"}


async def test_the_pages_hand_options_to_a_script_and_no_inline_script(site: Site) -> None:
    client, settings = site
    await sign_in(client, "alice")
    page = await client.get(ENROL)

    options = json.loads(options_on_page(page.text))
    assert options["rp"]["id"] == site_of(settings.public_url)[1]
    assert options["user"]["name"] == "alice"
    assert "Register security key" in page.text
    assert '<script src="/static/webauthn.js"></script>' in page.text
    assert page.text.count("<script") == 1  # the CSP allows no inline script
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    script = await client.get("/static/webauthn.js")
    assert script.status_code == 200
    assert "navigator.credentials.create" in script.text
    assert "navigator.credentials.get" in script.text


async def test_later_sign_in_uses_the_key_and_each_answer_works_once(site: Site) -> None:
    client, settings = site
    key = await enrol_alice(client, settings)
    await sign_out(client)
    await sign_in(client, "alice")

    assert (await client.get("/2fa")).headers["location"] == VERIFY
    page = await client.get(VERIFY)
    assert "Insert your security key and touch it" in page.text
    assert 'href="/2fa/use"' in page.text  # use another method
    origin = site_of(settings.public_url)[0]
    credential = assertion_response(options_on_page(page.text), key, origin)
    form = {
        "csrf_token": csrf_from(page.text),
        "challenge": challenge_from(page.text),
        "credential": credential,
    }
    accepted = await client.post(VERIFY, data=form)
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/2fa/after"

    await sign_out(client)
    await sign_in(client, "alice")
    page = await client.get(VERIFY)
    replayed = await client.post(
        VERIFY,
        data={**form, "csrf_token": csrf_from(page.text), "challenge": challenge_from(page.text)},
    )
    assert replayed.status_code == 401
    assert WRONG in unescape(replayed.text)


async def test_an_answer_relayed_from_another_origin_is_refused(site: Site) -> None:
    client, settings = site
    key = await enrol_alice(client, settings)
    await sign_out(client)
    await sign_in(client, "alice")

    phished = await answer_with(client, settings, key, origin="https://twofa.evil.test")
    assert phished.status_code == 401
    assert WRONG in unescape(phished.text)
    assert (await client.get("/")).status_code != 200  # not signed in


async def test_posting_no_key_answer_keeps_the_page_with_the_message(site: Site) -> None:
    client, _ = site
    await sign_in(client, "alice")
    page = await client.get(ENROL)
    refused = await client.post(
        ENROL,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "credential": "",
            "name": "Blue key",
        },
    )
    assert refused.status_code == 400
    assert WRONG in unescape(refused.text)
    assert challenge_from(refused.text) == challenge_from(page.text)  # try again, same draft


async def test_a_key_is_named_at_set_up_and_renamed_on_my_2fa(site: Site) -> None:
    client, settings = site
    await enrol_alice(client, settings, name="Blue YubiKey")
    page = await client.get("/my-2fa")
    credential_id = credential_rows(page.text)["Blue YubiKey"]

    renamed = await client.post(
        "/my-2fa/rename",
        data={"csrf_token": csrf_from(page.text), "credential": credential_id, "label": "Keyring"},
    )
    assert renamed.status_code == 303
    assert renamed.headers["location"] == "/my-2fa?done=renamed"
    assert credential_rows((await client.get("/my-2fa")).text) == {"Keyring": credential_id}


async def test_two_keys_either_signs_in(site: Site) -> None:
    client, settings = site
    first = await enrol_alice(client, settings, name="Blue key")
    my = await client.get("/my-2fa")
    assert f'href="{ENROL}" data-add="webauthn"' in my.text  # many keys per user

    second, added = await register_key(client, settings, name="Spare key")
    assert added.status_code == 303
    assert set(credential_rows((await client.get("/my-2fa")).text)) == {"Blue key", "Spare key"}

    assert (await sign_in_with(client, settings, second)).status_code == 303
    assert (await sign_in_with(client, settings, first)).status_code == 303
    assert (await client.get("/")).status_code == 200


async def test_the_same_key_is_not_registered_twice(site: Site) -> None:
    client, settings = site
    key = await enrol_alice(client, settings, name="Blue key")
    page = await client.get(ENROL)
    origin, rp_id = site_of(settings.public_url)
    options = options_on_page(page.text)
    excluded = json.loads(options)["excludeCredentials"]
    assert [item["id"] for item in excluded] == [b64url(key.credential_id)]
    with pytest.raises(KeyAlreadyRegistered):  # what the browser does with them
        registration_response(options, origin, rp_id, holding=key)

    # A browser that ignores them sends the key's credential again: the server refuses it.
    again, _ = registration_response(options, origin, rp_id, holding=key, honour_exclusions=False)
    refused = await client.post(
        ENROL,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "credential": again,
            "name": "Blue key again",
        },
    )
    assert refused.status_code == 400
    assert "This security key or passkey is already registered." in unescape(refused.text)
    assert set(credential_rows((await client.get("/my-2fa")).text)) == {"Blue key"}
    _, added = await register_key(client, settings, name="Spare key")  # another key is fine
    assert added.status_code == 303, added.text


async def test_a_key_registered_to_another_user_is_refused(site: Site) -> None:
    """WebAuthn's registration step 22: a credential id already registered, to anyone, is
    refused. Bob's options cannot exclude Alice's key (he must not learn it), so only the
    database's uniqueness stops it; the refusal rolls back whole and is on record."""
    client, settings = site
    alices_key = await enrol_alice(client, settings, name="Blue key")
    gateway = await Gateway.start(settings)
    try:
        await gateway.accounts.set_user_policy("bob", True)
    finally:
        await gateway.close()
    async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as bob:
        assert (await sign_in(bob, "bob")).headers["location"] == "/2fa"
        page = await bob.get(ENROL)
        options = options_on_page(page.text)
        assert json.loads(options)["excludeCredentials"] == []
        origin, rp_id = site_of(settings.public_url)
        same_id, _ = registration_response(options, origin, rp_id, holding=alices_key)
        form = {"csrf_token": csrf_from(page.text), "challenge": challenge_from(page.text)}
        refused = await bob.post(ENROL, data={**form, "credential": same_id, "name": "Mine"})
        assert refused.status_code == 400
        assert "This security key or passkey is already registered." in unescape(refused.text)
        # Nothing was kept of the refused attempt: the same page still takes Bob's own key.
        own, _ = registration_response(options, origin, rp_id)
        added = await bob.post(ENROL, data={**form, "credential": own, "name": "Bob's key"})
        assert added.status_code == 303, added.text
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            keys = (await db.scalars(select(CredentialRow.label).order_by(CredentialRow.id))).all()
            refusals = (
                await db.scalars(
                    select(AuditRow).where(
                        AuditRow.kind == "enrolment", AuditRow.outcome == "refused"
                    )
                )
            ).all()
    finally:
        await gateway.close()
    assert keys == ["Blue key", "Bob's key"]
    assert [(r.username, r.detail["reason"]) for r in refusals] == [
        ("bob", "credential id registered already")
    ]


async def test_adding_a_key_later_asks_to_confirm_with_the_first_key(site: Site) -> None:
    client, settings = site
    first = await enrol_alice(client, settings, name="Blue key")
    await age_second_factor(settings)

    asked = await client.get(ENROL)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/2fa/use?step_up=1"
    confirmed = await answer_with(client, settings, first)
    assert confirmed.status_code == 303
    assert (await client.get(confirmed.headers["location"])).headers["location"] == ENROL

    second, added = await register_key(client, settings, name="Spare key")
    assert added.status_code == 303, added.text
    assert set(credential_rows((await client.get("/my-2fa")).text)) == {"Blue key", "Spare key"}
    assert (await sign_in_with(client, settings, second)).status_code == 303


async def test_removing_a_key_asks_to_confirm_with_a_key_first(site: Site) -> None:
    client, settings = site
    lost = await enrol_alice(client, settings, name="Lost key")
    kept, _ = await register_key(client, settings, name="Kept key")
    await age_second_factor(settings)
    page = await client.get("/my-2fa")
    lost_id = credential_rows(page.text)["Lost key"]
    remove = {"csrf_token": csrf_from(page.text), "credential": lost_id}

    asked = await client.post("/my-2fa/remove", data=remove)
    assert asked.status_code == 303
    assert asked.headers["location"] == "/2fa/use?step_up=1"
    confirmed = await answer_with(client, settings, kept)
    assert confirmed.status_code == 303
    assert (await client.get(confirmed.headers["location"])).headers["location"] == "/my-2fa"
    page = await client.get("/my-2fa")  # a new session after the step-up: a new token
    removed = await client.post(
        "/my-2fa/remove", data={**remove, "csrf_token": csrf_from(page.text)}
    )
    assert removed.headers["location"] == "/my-2fa?done=removed"
    assert set(credential_rows((await client.get("/my-2fa")).text)) == {"Kept key"}

    await sign_out(client)
    await sign_in(client, "alice")
    page = await client.get(VERIFY)
    options = json.loads(options_on_page(page.text))
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(kept.credential_id)]
    options["allowCredentials"] = []  # the removed key answers anyway
    forced = assertion_response(json.dumps(options), lost, site_of(settings.public_url)[0])
    refused = await client.post(
        VERIFY,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "credential": forced,
        },
    )
    assert refused.status_code == 401
