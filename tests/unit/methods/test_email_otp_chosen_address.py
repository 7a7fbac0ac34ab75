"""E-mail codes when the admin lets users choose the address (`users_choose_address`): the
method first asks for one, sends the code only to an address that passes a strict check, and
with the option off ignores whatever a form says."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from tests.support.smtp import code_in
from twofa.methods.base import DetailsNeeded, EnrolmentRefused, MethodContext, MethodUser
from twofa.methods.email_otp import (
    NO_ADDRESS,
    NOT_AN_ADDRESS,
    USERS_CHOOSE_ADDRESS,
    EmailOtpMethod,
    checked_address,
)

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
ACCOUNT = "erin@example.com"
CHOOSE = {USERS_CHOOSE_ADDRESS: True}


def context(
    email: str = ACCOUNT,
    options: Mapping[str, object] = CHOOSE,
    entered: Mapping[str, str] | None = None,
) -> MethodContext:
    return MethodContext(MethodUser(7, "erin", "Erin", email), NOW, options, dict(entered or {}))


async def test_set_up_first_asks_for_an_address_prefilled_with_the_account_one() -> None:
    with pytest.raises(DetailsNeeded) as asked:
        await EmailOtpMethod().begin_enrolment(context())
    assert asked.value.show == {"ask_address": True, "address": ACCOUNT, "minutes": 10}
    assert asked.value.message == ""


async def test_a_user_without_an_address_is_asked_for_one_instead_of_refused() -> None:
    with pytest.raises(DetailsNeeded) as asked:
        await EmailOtpMethod().begin_enrolment(context(email=""))
    assert asked.value.show["address"] == ""


async def test_the_code_goes_to_the_address_the_user_typed_shown_whole() -> None:
    entered = {"address": "  erin.home@example.org "}
    draft = await EmailOtpMethod().begin_enrolment(context(entered=entered))

    assert draft.delivery is not None
    assert draft.delivery.to == "erin.home@example.org"
    assert draft.keep["address"] == "erin.home@example.org"
    assert draft.show == {"address": "erin.home@example.org", "chosen": True, "minutes": 10}
    assert code_in(draft.delivery.body) not in str(dict(draft.keep))


async def test_the_confirmed_credential_keeps_the_chosen_address() -> None:
    method = EmailOtpMethod()
    chosen = context(entered={"address": "erin.home@example.org"})
    draft = await method.begin_enrolment(chosen)
    assert draft.delivery is not None

    credential = await method.finish_enrolment(
        chosen, draft.keep, None, {"code": code_in(draft.delivery.body)}
    )

    assert credential.state == {"address": "erin.home@example.org"}


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "erin",
        "erin@",
        "@example.com",
        "erin@localhost",
        "erin@@example.com",
        "erin example@example.com",
        "erin@example.com\r\nBcc: victim@example.net",
        "erin@example.com, mallory@example.net",
        "Erin <erin@example.com>",
        '"erin"@example.com',
        "erin..x@example.com",
        ".erin@example.com",
        "érin@example.com",
        "erin@exa_mple.com",
        "erin@-example.com",
        "x" * 65 + "@example.com",
        "erin@" + "a" * 250 + ".com",
    ],
)
async def test_anything_but_a_plain_address_is_sent_back_with_a_clear_message(typed: str) -> None:
    with pytest.raises(DetailsNeeded) as asked:
        await EmailOtpMethod().begin_enrolment(context(entered={"address": typed}))
    assert asked.value.message == NOT_AN_ADDRESS
    assert asked.value.show["ask_address"] is True
    assert asked.value.show["address"] == typed[:254]  # what they typed comes back to fix


@pytest.mark.parametrize(
    "typed",
    ["erin@example.com", "first.last+2fa@mail.example.co.uk", "o'brien@example.ie", "a@b.io"],
)
def test_plain_addresses_pass_the_check(typed: str) -> None:
    assert checked_address(typed) == typed


async def test_with_the_option_off_a_typed_address_is_ignored() -> None:
    """A form posted by hand cannot redirect codes when the admin did not allow choosing."""
    entered = {"address": "mallory@example.net"}
    draft = await EmailOtpMethod().begin_enrolment(context(options={}, entered=entered))

    assert draft.delivery is not None
    assert draft.delivery.to == ACCOUNT


async def test_with_the_option_off_no_account_address_is_still_refused() -> None:
    entered = {"address": "mallory@example.net"}
    with pytest.raises(EnrolmentRefused) as refused:
        await EmailOtpMethod().begin_enrolment(context(email="", options={}, entered=entered))
    assert refused.value.message == NO_ADDRESS


@pytest.mark.parametrize("value", ["true", 1, "yes", None])
async def test_only_a_true_option_lets_users_choose(value: object) -> None:
    draft = await EmailOtpMethod().begin_enrolment(
        context(options={USERS_CHOOSE_ADDRESS: value}, entered={"address": "x@example.net"})
    )
    assert draft.delivery is not None
    assert draft.delivery.to == ACCOUNT
