"""The authenticator app over real HTTP: set-up as the first method, sign-in with it, a code
used once, codes typed with spaces, per-method lock-out, and My 2FA's rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_at, code_for, secret_from_page
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway, sign_in
from tests.support.totp_flow import (
    challenge_from,
    enrol_alice,
    enrol_alice_at_step,
    post_code,
    sign_out,
    submit_code,
)
from tests.support.two_factor import allow_methods

WRONG = "That code didn't work. Check it and try again."


@pytest.fixture(params=["sqlite", "postgresql"])
async def browser(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with (
        factory as url,
        running_gateway(url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await allow_methods(settings, ("totp", "duo_push"), first_method="totp")
        yield client


async def test_first_sign_in_sets_up_the_app_and_signs_in(browser: httpx.AsyncClient) -> None:
    await enrol_alice(browser)

    home = await browser.get("/")
    assert home.status_code == 200
    assert "Alice Liddell" in home.text


async def test_later_sign_in_asks_for_a_code_and_accepts_it_once(
    browser: httpx.AsyncClient,
) -> None:
    secret = await enrol_alice(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")

    assert (await browser.get("/2fa")).headers["location"] == "/2fa/m/totp"
    code = code_at(secret, +1)  # the enrolment used this step; the next one is still valid
    accepted = await post_code(browser, "/2fa/m/totp", code)
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/2fa/after"

    await sign_out(browser)
    await sign_in(browser, "alice")
    replayed = await post_code(browser, "/2fa/m/totp", code)
    assert replayed.status_code == 401
    assert WRONG in unescape(replayed.text)


async def test_the_enrolment_code_cannot_sign_in_again(browser: httpx.AsyncClient) -> None:
    secret, enrolment_step = await enrol_alice_at_step(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")

    # the step used to confirm set-up, and every earlier one, are spent; counted from the
    # enrolment's own step, since the clock may have moved on to a fresh one by now
    for step in (enrolment_step, enrolment_step - 1):
        answer = await post_code(browser, "/2fa/m/totp", code_for(secret, step))
        assert answer.status_code == 401
        assert WRONG in unescape(answer.text)


@pytest.mark.parametrize("typed", ["{a} {b}", "{a}-{b}", " {a}{b} "])
async def test_codes_typed_with_spaces_or_dashes_are_accepted(
    browser: httpx.AsyncClient, typed: str
) -> None:
    secret = await enrol_alice(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")
    code = code_at(secret, +1)

    answer = await post_code(browser, "/2fa/m/totp", typed.format(a=code[:3], b=code[3:]))
    assert answer.status_code == 303


@pytest.mark.parametrize(
    "junk", ["", "12345", "1234567", "abcdef", "\uff11\uff12\uff13\uff14\uff15\uff16", "0" * 400]
)
async def test_malformed_codes_get_the_plain_message(browser: httpx.AsyncClient, junk: str) -> None:
    await enrol_alice(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")

    answer = await post_code(browser, "/2fa/m/totp", junk)
    assert answer.status_code == 401
    assert WRONG in unescape(answer.text)


async def test_five_wrong_codes_lock_the_method(browser: httpx.AsyncClient) -> None:
    secret = await enrol_alice(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")
    for _ in range(5):
        await post_code(browser, "/2fa/m/totp", "000000")

    locked = await browser.get("/2fa/m/totp")
    assert locked.status_code == 400
    assert "Too many failed attempts" in locked.text
    # the right code does not help while locked
    page_less = await browser.post(
        "/2fa/m/totp",
        data={"csrf_token": "x", "challenge": "x", "code": code_at(secret, +1)},
    )
    assert page_less.status_code in (400, 403)


async def test_a_challenge_from_another_session_is_refused(browser: httpx.AsyncClient) -> None:
    secret = await enrol_alice(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")
    page = await browser.get("/2fa/m/totp")
    stolen_challenge = challenge_from(page.text)

    async with httpx.AsyncClient(base_url=str(browser.base_url), timeout=30) as other:
        await sign_in(other, "alice")
        other_page = await other.get("/2fa/m/totp")
        answer = await other.post(
            "/2fa/m/totp",
            data={
                "csrf_token": csrf_from(other_page.text),
                "challenge": stolen_challenge,
                "code": code_at(secret, +1),
            },
        )
    assert answer.status_code == 400
    assert "expired or was already used" in answer.text


async def test_my_2fa_refuses_to_remove_the_only_required_method(
    browser: httpx.AsyncClient,
) -> None:
    await enrol_alice(browser)
    page = await browser.get("/my-2fa")
    assert "Authenticator app" in page.text
    credential = page.text.split('name="credential" value="', 1)[1].split('"', 1)[0]

    answer = await browser.post(
        "/my-2fa/remove", data={"csrf_token": csrf_from(page.text), "credential": credential}
    )
    assert answer.status_code == 400
    assert "only second factor" in answer.text
    assert "Authenticator app" in (await browser.get("/my-2fa")).text


async def test_an_unknown_method_is_an_error_not_a_fallback(browser: httpx.AsyncClient) -> None:
    await sign_in(browser, "alice")
    answer = await browser.get("/2fa/m/carrier_pigeon")
    assert answer.status_code == 404
    assert "no such sign-in method" in answer.text


async def test_a_password_only_session_cannot_enrol_over_an_existing_method(
    browser: httpx.AsyncClient,
) -> None:
    """Someone with alice's password must not add their own authenticator."""
    await enrol_alice(browser)
    await sign_out(browser)
    await sign_in(browser, "alice")

    answer = await browser.get("/2fa/m/totp/enrol")
    assert answer.status_code == 400
    assert "Verify it's you with your second factor first" in unescape(answer.text)


async def test_moving_to_a_new_phone_replaces_the_key_once_the_new_one_is_confirmed(
    browser: httpx.AsyncClient,
) -> None:
    old_secret, step = await enrol_alice_at_step(browser)  # a second factor just now
    my_2fa = await browser.get("/my-2fa")
    assert 'href="/2fa/m/totp/enrol" data-replace="totp">Move to a new phone</a>' in my_2fa.text

    page = await browser.get("/2fa/m/totp/enrol")
    new_secret = secret_from_page(page.text)
    assert new_secret != old_secret
    confirmed = await submit_code(browser, "/2fa/m/totp/enrol", page, code_for(new_secret, step))
    assert confirmed.status_code == 303, confirmed.text
    await sign_out(browser)

    await sign_in(browser, "alice")
    old_phone = await post_code(browser, "/2fa/m/totp", code_for(old_secret, step + 1))
    assert WRONG in unescape(old_phone.text)
    new_phone = await post_code(browser, "/2fa/m/totp", code_for(new_secret, step + 1))
    assert new_phone.status_code == 303, new_phone.text
