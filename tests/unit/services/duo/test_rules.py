"""Which Duo factors a user is offered: only what both their devices and the admin allow."""

from __future__ import annotations

import pytest

from twofa.config import DEFAULT_DUO_FACTORS, DuoFactor
from twofa.duo.models import Capability, Device, DeviceType
from twofa.services.duo.rules import (
    CALLING,
    MESSAGES,
    PHONE_CHALLENGE,
    PUSH_CHALLENGE,
    PushState,
    offer_for,
    offer_for_new_duo_mobile,
    pending_message,
)

EVERY = tuple(DuoFactor)


def device(
    device_id: str, *capabilities: Capability, kind: DeviceType = DeviceType.PHONE
) -> Device:
    return Device(device_id, kind, device_id, device_id, "", frozenset(capabilities))


FULL_PHONE = device("DP1", *Capability)
TABLET = device("DP2", Capability.PUSH, Capability.MOBILE_OTP)
FLIP_PHONE = device("DP3", Capability.PHONE, Capability.SMS)
TOKEN = device("DH4", kind=DeviceType.TOKEN)


def test_everything_allowed_and_capable_is_offered() -> None:
    offer = offer_for([FULL_PHONE], EVERY)
    assert (offer.push, offer.phone, offer.sms, offer.passcode) == (
        True,
        (FULL_PHONE,),
        (FULL_PHONE,),
        True,
    )


def test_the_default_offers_push_and_passcodes_only() -> None:
    offer = offer_for([FULL_PHONE], DEFAULT_DUO_FACTORS)
    assert (offer.push, offer.phone, offer.sms, offer.passcode) == (True, (), (), True)


def test_a_device_without_phone_or_sms_gets_neither() -> None:
    offer = offer_for([TABLET], EVERY)
    assert (offer.phone, offer.sms) == ((), ())
    assert offer.push
    assert offer.passcode


def test_calls_and_texts_go_only_to_devices_that_can_take_them() -> None:
    offer = offer_for([TABLET, FLIP_PHONE], EVERY)
    assert offer.phone == (FLIP_PHONE,)
    assert offer.sms == (FLIP_PHONE,)


def test_a_hardware_token_shows_passcodes_without_capabilities() -> None:
    assert offer_for([TOKEN], EVERY).passcode
    assert not offer_for([TOKEN], [DuoFactor.PUSH]).anything


@pytest.mark.parametrize(
    ("allowed", "field"), [([DuoFactor.PUSH, DuoFactor.SMS], True), ([DuoFactor.PUSH], False)]
)
def test_sms_alone_still_needs_the_passcode_field(allowed: list[DuoFactor], field: bool) -> None:
    offer = offer_for([FLIP_PHONE], allowed)
    assert not offer.passcode
    assert offer.passcode_field is field


def test_a_phone_about_to_be_activated_pushes_and_shows_passcodes_only() -> None:
    offer = offer_for_new_duo_mobile(EVERY)
    assert (offer.push, offer.phone, offer.sms, offer.passcode) == (True, (), (), True)
    assert not offer_for_new_duo_mobile([DuoFactor.PHONE]).anything


def test_a_ringing_call_says_so_and_a_push_says_approve() -> None:
    assert pending_message(PHONE_CHALLENGE) == CALLING
    assert pending_message(PUSH_CHALLENGE) == MESSAGES[PushState.PENDING]
