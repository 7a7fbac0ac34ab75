"""E-mail codes as the method computes them: what is sent and to whom, what the server keeps
(no code in clear), which typed codes pass, and the masked address the pages show."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.authenticator_email_otp import other_code
from tests.support.smtp import code_in
from twofa.methods.base import (
    Delivery,
    EnrolmentRefused,
    MethodContext,
    MethodUser,
    ResponseRejected,
    StoredCredential,
)
from twofa.methods.email_otp import (
    NO_ADDRESS,
    EmailOtpMethod,
    code_matches,
    kept_code,
    mask_address,
    new_code,
)

NOW = datetime(2026, 11, 28, 12, 0, 15, tzinfo=UTC)
ADDRESS = "erin.example@example.com"


def context(email: str = ADDRESS) -> MethodContext:
    return MethodContext(MethodUser(7, "erin", "Erin", email), NOW)


def credential(address: str = ADDRESS, credential_id: int = 11) -> StoredCredential:
    return StoredCredential(credential_id, mask_address(address), None, {"address": address}, 1)


def sent_code(delivery: Delivery | None) -> str:
    assert delivery is not None, "the method asked for no e-mail"
    return code_in(delivery.body)


async def test_enrolment_sends_a_code_to_the_directory_address_and_keeps_only_a_hash() -> None:
    draft = await EmailOtpMethod().begin_enrolment(context())

    code = sent_code(draft.delivery)
    assert draft.delivery is not None
    assert draft.delivery.to == ADDRESS
    assert draft.show == {"address": "e***e@example.com", "chosen": False, "minutes": 10}
    assert draft.secret is None
    assert code not in json.dumps(dict(draft.keep))
    assert code not in json.dumps(dict(draft.show))


async def test_enrolment_with_the_mailed_code_stores_the_address() -> None:
    method = EmailOtpMethod()
    draft = await method.begin_enrolment(context())

    stored = await method.finish_enrolment(
        context(), draft.keep, None, {"code": sent_code(draft.delivery)}
    )
    assert stored.label == "e***e@example.com"
    assert stored.state == {"address": ADDRESS}
    assert stored.secret is None


async def test_enrolment_with_a_wrong_code_is_rejected() -> None:
    method = EmailOtpMethod()
    draft = await method.begin_enrolment(context())

    with pytest.raises(ResponseRejected):
        await method.finish_enrolment(
            context(), draft.keep, None, {"code": other_code(sent_code(draft.delivery))}
        )


@pytest.mark.parametrize("email", ["", "   "])
async def test_a_user_without_an_address_is_told_to_ask_the_admin(email: str) -> None:
    with pytest.raises(EnrolmentRefused) as refused:
        await EmailOtpMethod().begin_enrolment(context(email))
    assert refused.value.message == NO_ADDRESS


async def test_sign_in_codes_go_to_the_enrolled_address_not_the_directory_one() -> None:
    """The address was proven at enrolment; a changed directory entry must not redirect
    codes elsewhere without a new enrolment."""
    prompt = await EmailOtpMethod().start(
        context("new-address@example.org"), [credential("old@example.com")]
    )

    assert prompt.delivery is not None
    assert prompt.delivery.to == "old@example.com"
    assert prompt.show == {"address": "o***d@example.com", "minutes": 10}


async def test_the_message_says_what_it_is_for_how_long_it_lasts_and_what_to_do() -> None:
    prompt = await EmailOtpMethod().start(context(), [credential()])

    assert prompt.delivery is not None
    body = prompt.delivery.body
    assert "finish signing in" in body
    assert "valid for 10 minutes" in body
    assert "If this wasn't you" in body
    assert "change your password" in body
    assert sent_code(prompt.delivery) not in prompt.delivery.subject  # lock screens show it


async def verify_typed(typed: str, keep_changes: Mapping[str, Any] | None = None) -> None:
    method = EmailOtpMethod()
    prompt = await method.start(context(), [credential()])
    code = sent_code(prompt.delivery)
    keep = {**prompt.keep, **(keep_changes or {})}
    await method.verify(context(), keep, [credential()], {"code": typed.format(code=code)})


@pytest.mark.parametrize("typed", ["{code}", " {code} ", "{code[0]}{code[1]}{code[2]} {code[3]}"
                                   "{code[4]}{code[5]}", "{code[0]}{code[1]}{code[2]}-{code[3]}"
                                   "{code[4]}{code[5]}"])  # fmt: skip
async def test_the_mailed_code_passes_also_typed_with_spaces(typed: str) -> None:
    await verify_typed(typed)


async def test_verify_names_the_credential_the_code_went_to() -> None:
    method = EmailOtpMethod()
    prompt = await method.start(context(), [credential(credential_id=42)])
    verified = await method.verify(
        context(), prompt.keep, [credential(credential_id=42)], {"code": sent_code(prompt.delivery)}
    )
    assert verified.credential_id == 42
    assert verified.state is None
    assert verified.use_item is None


@pytest.mark.parametrize(
    "typed",
    ["", "12345", "1234567", "abcdef", "\uff11\uff12\uff13\uff14\uff15\uff16", "0" * 400],
)
async def test_malformed_codes_are_rejected(typed: str) -> None:
    with pytest.raises(ResponseRejected):
        await verify_typed(typed)


async def test_a_code_from_another_challenge_is_rejected() -> None:
    method = EmailOtpMethod()
    first = await method.start(context(), [credential()])
    second = await method.start(context(), [credential()])

    with pytest.raises(ResponseRejected):
        await method.verify(
            context(), second.keep, [credential()], {"code": sent_code(first.delivery)}
        )


async def test_a_code_for_a_removed_credential_is_rejected() -> None:
    with pytest.raises(ResponseRejected):
        await verify_typed("{code}", {"credential": 999})


async def test_a_damaged_keep_is_rejected_not_crashed() -> None:
    with pytest.raises(ResponseRejected):
        await verify_typed("{code}", {"digest": None})


def test_codes_are_six_digits_and_vary() -> None:
    codes = {new_code() for _ in range(50)}
    assert all(len(code) == 6 and code.isascii() and code.isdigit() for code in codes)
    assert len(codes) > 40  # 50 draws from a million: repeats would mean no randomness


def test_code_matches_needs_the_salt_it_was_hashed_with() -> None:
    keep = kept_code("123456")
    assert code_matches(keep, "123456")
    assert not code_matches({**keep, "salt": "00" * 16}, "123456")


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("alice@example.com", "a***e@example.com"),
        ("al@example.com", "a***@example.com"),
        ("a@example.com", "a***@example.com"),
        ("first.last+tag@mail.example.org", "f***g@mail.example.org"),
    ],
)
def test_addresses_are_masked_but_recognisable(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_the_method_declares_a_resend_cooldown_and_a_ten_minute_challenge() -> None:
    method = EmailOtpMethod()
    assert method.challenge_seconds == 600
    assert method.resend_cooldown_seconds == 30
