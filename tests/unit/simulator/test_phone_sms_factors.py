"""The simulator's phone calls and SMS passcodes: a call rings, is answered and approved like a
push; a text carries a fresh batch of single-use passcodes readable on the control plane; a
device without the capability is refused the way Duo refuses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.unit.simulator.test_app import BASE_URL, IKEY, SKEY, Sim
from twofa.duo import AuthRequest, DuoApiError, DuoAuthClient, DuoCredentials, DuoEndpoint
from twofa.duo.models import AuthResult, Capability, Factor, PushRequest, TransactionStatus
from twofa.simulator import SimulatorSettings, create_simulator_app

PUSH_AND_PASSCODES_ONLY = [
    {"type": "phone", "name": "Tablet", "capabilities": ["push", "mobile_otp"]}
]


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    settings = SimulatorSettings(ikey=IKEY, skey=SKEY, long_poll_hold_s=0.2, push_timeout_s=30.0)
    transport = httpx.ASGITransport(app=create_simulator_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        duo = DuoAuthClient(
            http,
            credentials=DuoCredentials(IKEY, SKEY),
            endpoint=DuoEndpoint(signed_host="sim.test", base_url=BASE_URL),
        )
        yield Sim(http, duo, [])


def call(username: str = "alice", device: str = "auto") -> AuthRequest:
    return AuthRequest(Factor.PHONE, username=username, push=PushRequest(device=device))


def sms(username: str = "alice", device: str = "auto") -> AuthRequest:
    return AuthRequest(Factor.SMS, username=username, push=PushRequest(device=device))


async def inbox(sim: Sim, username: str = "alice") -> dict[str, Any]:
    response = await sim.http.get(f"/_sim/users/{username}/sms")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_phone_call_rings_is_answered_then_approved(sim: Sim) -> None:
    created = await sim.add_user("alice")
    phone = created["devices"][0]["device"]
    txid = await sim.duo.start_auth(call(device=phone))
    [listed] = await sim.transactions(username="alice", status="calling")
    assert (listed["txid"], listed["factor"], listed["device"]) == (txid, "phone", phone)
    ringing = await sim.duo.auth_status(txid)
    assert (ringing.result, ringing.status) == (AuthResult.WAITING, TransactionStatus.CALLING)
    assert ringing.status_msg == "Calling your phone..."

    assert (await sim.settle(txid, "answer")).status_code == 200
    answered = await sim.duo.auth_status(txid)
    assert (answered.result, answered.status) == (AuthResult.WAITING, TransactionStatus.ANSWERED)
    assert (await sim.settle(txid, "approve")).status_code == 200
    approved = await sim.duo.auth_status(txid)
    assert (approved.result, approved.status) == (AuthResult.ALLOW, TransactionStatus.ALLOW)


async def test_phone_call_denied_ends_in_deny(sim: Sim) -> None:
    await sim.add_user("alice")
    txid = await sim.duo.start_auth(call())
    assert (await sim.settle(txid, "deny")).status_code == 200
    denied = await sim.duo.auth_status(txid)
    assert (denied.result, denied.status) == (AuthResult.DENY, TransactionStatus.DENY)


async def test_only_a_ringing_call_can_be_answered(sim: Sim) -> None:
    await sim.add_user("alice")
    push = await sim.push()
    refused = await sim.settle(push, "answer")
    assert refused.status_code == 409
    assert "phone call" in refused.json()["error"]
    ringing = await sim.duo.start_auth(call())
    await sim.settle(ringing, "answer")
    assert (await sim.settle(ringing, "answer")).status_code == 409


async def test_sms_answers_like_duo_and_the_text_is_readable(sim: Sim) -> None:
    created = await sim.add_user("alice", devices=[{"type": "phone", "number": "XXX-XXX-4788"}])
    phone = created["devices"][0]["device"]
    assert (await inbox(sim))["messages"] == []

    outcome = await sim.duo.auth(sms(device=phone))

    assert (outcome.result, outcome.status) == (AuthResult.DENY, TransactionStatus.SENT)
    assert outcome.status_msg == "New SMS passcodes sent."
    [message] = (await inbox(sim))["messages"]
    assert (message["device"], message["number"]) == (phone, "XXX-XXX-4788")
    assert len(message["passcodes"]) == 10
    assert len(set(message["passcodes"])) == 10
    assert all(code.isdigit() and len(code) == 7 for code in message["passcodes"])
    assert message["unused"] == message["passcodes"]


async def test_each_sms_passcode_works_once(sim: Sim) -> None:
    await sim.add_user("alice")
    await sim.duo.auth(sms())
    [message] = (await inbox(sim))["messages"]
    code = message["passcodes"][3]
    passcode = AuthRequest(Factor.PASSCODE, username="alice", passcode=code)
    assert (await sim.duo.auth(passcode)).result is AuthResult.ALLOW
    assert (await sim.duo.auth(passcode)).result is AuthResult.DENY
    [after] = (await inbox(sim))["messages"]
    assert code not in after["unused"]
    assert len(after["unused"]) == 9


async def test_a_new_text_replaces_the_previous_batch(sim: Sim) -> None:
    await sim.add_user("alice")
    await sim.duo.auth(sms())
    await sim.duo.auth(sms())
    first, second = (await inbox(sim))["messages"]
    assert first["unused"] == []
    stale = AuthRequest(Factor.PASSCODE, username="alice", passcode=first["passcodes"][0])
    assert (await sim.duo.auth(stale)).result is AuthResult.DENY
    fresh = AuthRequest(Factor.PASSCODE, username="alice", passcode=second["passcodes"][0])
    assert (await sim.duo.auth(fresh)).result is AuthResult.ALLOW


async def test_sms_inbox_of_an_unknown_user_is_404(sim: Sim) -> None:
    response = await sim.http.get("/_sim/users/nobody/sms")
    assert response.status_code == 404


@pytest.mark.parametrize("factor", [Factor.PHONE, Factor.SMS])
async def test_device_without_phone_or_sms_is_refused_like_duo(sim: Sim, factor: Factor) -> None:
    created = await sim.add_user("alice", devices=PUSH_AND_PASSCODES_ONLY)
    tablet = created["devices"][0]["device"]
    for device in ("auto", tablet):
        request = AuthRequest(factor, username="alice", push=PushRequest(device=device))
        with pytest.raises(DuoApiError) as caught:
            await sim.duo.start_auth(request)
        assert (caught.value.code, caught.value.detail) == (40002, "no capable device")


async def test_default_phone_can_push_call_text_and_show_passcodes(sim: Sim) -> None:
    await sim.add_user("alice")
    preauth = await sim.duo.preauth(username="alice")
    [phone] = preauth.devices
    for capability in (Capability.PUSH, Capability.PHONE, Capability.SMS, Capability.MOBILE_OTP):
        assert preauth.devices_that_can(capability) == (phone,)


@pytest.mark.parametrize(("number", "calls_and_texts"), [("", False), ("XXX-XXX-0042", True)])
async def test_activation_with_a_phone_number_lets_duo_call_and_text(
    sim: Sim, number: str, calls_and_texts: bool
) -> None:
    enrollment = await sim.duo.enroll(username="alice")
    body = {"activation_code": enrollment.activation_code, "number": number}
    assert (await sim.http.post("/_sim/activate", json=body)).status_code == 200
    [phone] = (await sim.duo.preauth(username="alice")).devices
    assert phone.can(Capability.PUSH)
    assert phone.can(Capability.MOBILE_OTP)
    assert phone.can(Capability.PHONE) is calls_and_texts
    assert phone.can(Capability.SMS) is calls_and_texts
    assert phone.number == number


async def test_phone_page_shows_calls_and_text_messages(sim: Sim) -> None:
    page = (await sim.http.get("/_sim/phone")).text
    assert "Incoming call… press 1 to approve" in page
    assert "Text messages" in page
    assert "/sms" in page
