"""The client's side of Duo's other factors: devices by capability from preauth, a phone call
started with `async=1`, and SMS answered with deny/`sent` (which is not a failure)."""

from __future__ import annotations

import json

import httpx

from twofa.duo import AuthRequest, DuoAuthClient, DuoCredentials, DuoEndpoint
from twofa.duo.models import AuthResult, Capability, Factor, PushRequest, TransactionStatus

HOST = "api-1234abcd.duosecurity.com"
PREAUTH = {
    "result": "auth",
    "status_msg": "Account is active",
    "devices": [
        {"device": "DP1", "type": "phone", "capabilities": ["auto", "push", "mobile_otp"]},
        {"device": "DP2", "type": "phone", "number": "XXX-XXX-0002", "capabilities": ["sms"]},
        {"device": "DP3", "type": "phone", "capabilities": ["auto", "phone", "sms"]},
        {"device": "DH4", "type": "token"},
    ],
}


def client_answering(answers: dict[str, object], seen: list[dict[str, object]]) -> DuoAuthClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content) if request.content else {})
        body = {"stat": "OK", "response": answers[request.url.path]}
        return httpx.Response(200, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return DuoAuthClient(
        http,
        credentials=DuoCredentials("DI" + "X" * 18, "s" * 40),
        endpoint=DuoEndpoint.parse(HOST),
    )


async def test_preauth_devices_are_found_by_capability() -> None:
    client = client_answering({"/auth/v2/preauth": PREAUTH}, [])
    preauth = await client.preauth(username="alice")
    ids = {c: [d.device_id for d in preauth.devices_that_can(c)] for c in Capability}
    assert ids[Capability.PUSH] == ["DP1"]
    assert ids[Capability.PHONE] == ["DP3"]
    assert ids[Capability.SMS] == ["DP2", "DP3"]
    assert ids[Capability.MOBILE_OTP] == ["DP1"]
    assert [d.device_id for d in preauth.push_devices] == ["DP1"]


async def test_phone_call_is_started_asynchronously_on_the_chosen_device() -> None:
    seen: list[dict[str, object]] = []
    client = client_answering({"/auth/v2/auth": {"txid": "tx-call"}}, seen)
    request = AuthRequest(Factor.PHONE, username="alice", push=PushRequest(device="DP3"))
    assert await client.start_auth(request) == "tx-call"
    assert seen == [{"async": "1", "device": "DP3", "factor": "phone", "username": "alice"}]


async def test_sms_answer_deny_sent_is_an_outcome_not_an_error() -> None:
    sent = {"result": "deny", "status": "sent", "status_msg": "New SMS passcodes sent"}
    client = client_answering({"/auth/v2/auth": sent}, [])
    request = AuthRequest(Factor.SMS, username="alice", push=PushRequest(device="DP2"))
    outcome = await client.auth(request)
    assert (outcome.result, outcome.status) == (AuthResult.DENY, TransactionStatus.SENT)
    assert outcome.is_final
