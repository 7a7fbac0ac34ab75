"""The whole simulator app in-process: the signed Auth API, the control plane and faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from twofa.duo import (
    AuthRequest,
    DuoApiError,
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoServerError,
)
from twofa.duo.models import (
    AuthResult,
    EnrollmentStatus,
    Factor,
    PreauthOutcome,
    PushRequest,
    TransactionStatus,
)
from twofa.duo.signing import format_date, sign_request
from twofa.simulator import SimulatorSettings, create_simulator_app

IKEY = "DISIMTESTINTEGRATION"
SKEY = "simtestsecretkeysimtestsecretkeysimtest0"
BASE_URL = "http://sim.test"
SAFETY_S = 5.0  # only guards against a hung test; never a pass/fail threshold
PNG_MAGIC = b"\x89PNG"


@dataclass
class Sim:
    http: httpx.AsyncClient
    duo: DuoAuthClient
    sleeps: list[float]

    async def signed(self, method: str, path: str, params: Mapping[str, Any]) -> httpx.Response:
        request = sign_request(
            ikey=IKEY,
            skey=SKEY,
            host="sim.test",
            method=method,
            path=path,
            params=params,
            date=format_date(datetime.now(UTC)),
        )
        return await self.http.request(
            method, request.target, headers=request.headers, content=request.body or None
        )

    async def add_user(self, username: str, **fields: Any) -> dict[str, Any]:
        body = {"username": username, "devices": [{"type": "phone", "name": "iPhone"}], **fields}
        response = await self.http.post("/_sim/users", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def transactions(self, **query: str) -> list[dict[str, Any]]:
        response = await self.http.get("/_sim/transactions", params=query)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def settle(self, txid: str, action: str) -> httpx.Response:
        return await self.http.post(f"/_sim/transactions/{txid}/{action}")

    async def push(self, username: str = "alice") -> str:
        return await self.duo.start_auth(AuthRequest(Factor.PUSH, username=username))


def fail_envelope(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["stat"] == "FAIL"
    assert response.status_code == body["code"] // 100
    return body


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    settings = SimulatorSettings(ikey=IKEY, skey=SKEY, long_poll_hold_s=0.2, push_timeout_s=30.0)
    transport = httpx.ASGITransport(app=create_simulator_app(settings))
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        duo = DuoAuthClient(
            http,
            credentials=DuoCredentials(IKEY, SKEY),
            endpoint=DuoEndpoint(signed_host="sim.test", base_url=BASE_URL),
            sleep=fake_sleep,
            jitter=lambda: 0.0,
        )
        yield Sim(http, duo, sleeps)


async def test_check_and_ping_answer_with_the_time(sim: Sim) -> None:
    assert await sim.duo.check() > 0
    assert await sim.duo.ping() > 0


async def test_wrong_secret_key_is_refused(sim: Sim) -> None:
    wrong = DuoAuthClient(
        sim.http,
        credentials=DuoCredentials(IKEY, "not-the-secret"),
        endpoint=DuoEndpoint(signed_host="sim.test", base_url=BASE_URL),
    )
    with pytest.raises(DuoApiError) as caught:
        await wrong.check()
    assert caught.value.code == 40103
    assert caught.value.is_bad_credentials


async def test_preauth_unknown_user_must_enroll(sim: Sim) -> None:
    preauth = await sim.duo.preauth(username="nobody")
    assert preauth.outcome is PreauthOutcome.ENROLL
    assert preauth.enroll_portal_url is not None
    assert preauth.enroll_portal_url.startswith(f"{BASE_URL}/portal")
    assert "nobody" in preauth.enroll_portal_url


async def test_preauth_known_user_gets_auth_with_devices(sim: Sim) -> None:
    user = await sim.add_user("alice")
    preauth = await sim.duo.preauth(username="alice")
    assert preauth.outcome is PreauthOutcome.AUTH
    assert [d.device_id for d in preauth.devices] == [d["device"] for d in user["devices"]]
    assert len(preauth.push_devices) == 1
    by_id = await sim.duo.preauth(user_id=user["user_id"])
    assert by_id.outcome is PreauthOutcome.AUTH


@pytest.mark.parametrize("override", [PreauthOutcome.ALLOW, PreauthOutcome.DENY])
async def test_preauth_override_is_honoured(sim: Sim, override: PreauthOutcome) -> None:
    await sim.add_user("alice", preauth=override.value)
    assert (await sim.duo.preauth(username="alice")).outcome is override


async def test_enroll_list_activate_and_status(sim: Sim) -> None:
    enrollment = await sim.duo.enroll(username="newbie", bypass_codes=2)
    assert enrollment.activation_code.startswith("duo://")
    assert len(enrollment.bypass_codes) == 2
    listed = (await sim.http.get("/_sim/enrollments", params={"username": "newbie"})).json()
    assert len(listed) == 1
    assert set(listed[0]) == {"username", "user_id", "activation_code", "status", "expires_at"}
    assert listed[0]["activation_code"] == enrollment.activation_code
    assert listed[0]["user_id"] == enrollment.user_id
    assert listed[0]["status"] == "waiting"
    status = await sim.duo.enroll_status(
        user_id=enrollment.user_id, activation_code=enrollment.activation_code
    )
    assert status is EnrollmentStatus.WAITING
    response = await sim.http.post(
        "/_sim/activate", json={"activation_code": enrollment.activation_code}
    )
    assert response.status_code == 200
    assert len(response.json()["devices"]) == 1
    status = await sim.duo.enroll_status(
        user_id=enrollment.user_id, activation_code=enrollment.activation_code
    )
    assert status is EnrollmentStatus.SUCCESS
    assert (await sim.duo.preauth(username="newbie")).outcome is PreauthOutcome.AUTH


async def test_enroll_existing_username_is_refused(sim: Sim) -> None:
    await sim.add_user("alice")
    with pytest.raises(DuoApiError) as caught:
        await sim.duo.enroll(username="alice")
    assert caught.value.code == 40002


async def test_activation_qr_is_a_png(sim: Sim) -> None:
    response = await sim.http.get("/frame/qr", params={"value": "duo://x"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)
    barcode = (await sim.duo.enroll(username="newbie")).activation_barcode
    assert (await sim.http.get(barcode)).content.startswith(PNG_MAGIC)


async def test_push_listed_then_approved(sim: Sim) -> None:
    await sim.add_user("alice")
    push = PushRequest(type="Login", display_username="Alice", pushinfo=(("app", "wiki"),))
    request = AuthRequest(Factor.PUSH, username="alice", push=push, ipaddr="203.0.113.5")
    txid = await sim.duo.start_auth(request)
    [listed] = await sim.transactions(username="alice", status="pushed")
    assert listed["txid"] == txid
    assert listed["username"] == "alice"
    assert listed["factor"] == "push"
    assert listed["status"] == "pushed"
    assert listed["device"].startswith("DP")
    assert listed["type"] == "Login"
    assert listed["display_username"] == "Alice"
    assert listed["pushinfo"] == {"app": "wiki"}
    assert listed["ipaddr"] == "203.0.113.5"
    assert isinstance(listed["created_at"], float)
    first = await sim.duo.auth_status(txid)
    assert first.result is AuthResult.WAITING
    assert (await sim.settle(txid, "approve")).status_code == 200
    outcome = await sim.duo.auth_status(txid)
    assert outcome.result is AuthResult.ALLOW
    assert outcome.status is TransactionStatus.ALLOW
    assert outcome.trusted_device_token
    assert await sim.transactions(username="alice", status="pushed") == []
    remembered = await sim.duo.preauth(
        username="alice", trusted_device_token=outcome.trusted_device_token
    )
    assert remembered.outcome is PreauthOutcome.ALLOW


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("deny", TransactionStatus.DENY),
        ("fraud", TransactionStatus.FRAUD),
        ("timeout", TransactionStatus.TIMEOUT),
    ],
)
async def test_push_refused(sim: Sim, action: str, status: TransactionStatus) -> None:
    await sim.add_user("alice")
    txid = await sim.push()
    response = await sim.settle(txid, action)
    assert response.json()["status"] == status.value
    outcome = await sim.duo.auth_status(txid)
    assert outcome.result is AuthResult.DENY
    assert outcome.status is status
    assert outcome.trusted_device_token is None


async def test_settling_an_ended_transaction_conflicts(sim: Sim) -> None:
    await sim.add_user("alice")
    txid = await sim.push()
    assert (await sim.settle(txid, "deny")).status_code == 200
    response = await sim.settle(txid, "approve")
    assert response.status_code == 409
    assert "error" in response.json()
    assert (await sim.duo.auth_status(txid)).status is TransactionStatus.DENY


async def test_unknown_txid(sim: Sim) -> None:
    response = await sim.settle("no-such-txid", "approve")
    assert response.status_code == 404
    assert "error" in response.json()
    with pytest.raises(DuoApiError) as caught:
        await sim.duo.auth_status("no-such-txid")
    assert (caught.value.http_status, caught.value.code) == (400, 40002)
    assert caught.value.detail == "txid"


async def test_unknown_device_is_refused(sim: Sim) -> None:
    await sim.add_user("alice")
    request = AuthRequest(Factor.PUSH, username="alice", push=PushRequest(device="DPNOSUCH"))
    with pytest.raises(DuoApiError) as caught:
        await sim.duo.start_auth(request)
    assert caught.value.code == 40002
    assert caught.value.detail == "device"


async def test_sms_sends_passcodes(sim: Sim) -> None:
    await sim.add_user("alice")
    outcome = await sim.duo.auth(AuthRequest(Factor.SMS, username="alice"))
    assert outcome.result is AuthResult.DENY
    assert outcome.status is TransactionStatus.SENT
    [user] = (await sim.http.get("/_sim/users")).json()
    assert len(user["passcodes"]) == 10
    code = user["passcodes"][0]
    passcode = AuthRequest(Factor.PASSCODE, username="alice", passcode=code)
    assert (await sim.duo.auth(passcode)).result is AuthResult.ALLOW


async def test_passcode_works_once(sim: Sim) -> None:
    await sim.add_user("alice")
    response = await sim.http.post("/_sim/passcodes", json={"username": "alice"})
    request = AuthRequest(Factor.PASSCODE, username="alice", passcode=response.json()["passcode"])
    first = await sim.duo.auth(request)
    assert (first.result, first.status) == (AuthResult.ALLOW, TransactionStatus.ALLOW)
    second = await sim.duo.auth(request)
    assert (second.result, second.status) == (AuthResult.DENY, TransactionStatus.DENY)


async def test_passcode_with_device_is_refused(sim: Sim) -> None:
    await sim.add_user("alice")
    code = (await sim.http.post("/_sim/passcodes", json={"username": "alice"})).json()["passcode"]
    params = {"username": "alice", "factor": "passcode", "passcode": code, "device": "auto"}
    body = fail_envelope(await sim.signed("POST", "/auth/v2/auth", params))
    assert (body["code"], body["message_detail"]) == (40002, "device")


async def test_missing_factor_is_refused(sim: Sim) -> None:
    await sim.add_user("alice")
    body = fail_envelope(await sim.signed("POST", "/auth/v2/auth", {"username": "alice"}))
    assert (body["code"], body["message_detail"]) == (40001, "factor")


async def test_sync_auth_completes_when_approved(sim: Sim) -> None:
    await sim.add_user("alice")
    pending = asyncio.create_task(sim.duo.auth(AuthRequest(Factor.PUSH, username="alice")))
    listed: list[dict[str, Any]] = []
    for _ in range(500):
        listed = await sim.transactions(username="alice", status="pushed")
        if listed:
            break
        await asyncio.sleep(0.01)
    assert len(listed) == 1
    assert not pending.done()
    assert (await sim.settle(listed[0]["txid"], "approve")).status_code == 200
    outcome = await asyncio.wait_for(pending, SAFETY_S)
    assert (outcome.result, outcome.status) == (AuthResult.ALLOW, TransactionStatus.ALLOW)


async def test_fault_fails_the_next_request_only(sim: Sim) -> None:
    await sim.add_user("alice")
    fault = {"endpoints": ["preauth"], "status": 503, "count": 1}
    assert (await sim.http.post("/_sim/faults", json=fault)).status_code == 200
    assert await sim.duo.check() > 0  # other endpoints are not affected
    response = await sim.signed("POST", "/auth/v2/preauth", {"username": "alice"})
    assert response.status_code == 503
    assert fail_envelope(response)["code"] == 50301
    assert (await sim.duo.preauth(username="alice")).outcome is PreauthOutcome.AUTH


async def test_latency_fault_still_answers(sim: Sim) -> None:
    fault = {"endpoints": ["check"], "latency_ms": 20}
    assert (await sim.http.post("/_sim/faults", json=fault)).json()["latency_ms"] == 20
    assert await sim.duo.check() > 0


async def test_deleting_faults_clears_them(sim: Sim) -> None:
    await sim.http.post("/_sim/faults", json={"status": 500})
    with pytest.raises(DuoServerError) as caught:
        await sim.duo.preauth(username="alice")
    assert caught.value.code == 50001
    with pytest.raises(DuoServerError):
        await sim.duo.preauth(username="alice")
    assert (await sim.http.delete("/_sim/faults")).status_code == 200
    assert (await sim.duo.preauth(username="alice")).outcome is PreauthOutcome.ENROLL


@pytest.mark.parametrize(
    "body",
    [
        {"status": 418},
        {"endpoints": "preauth"},
        {"latency_ms": -1},
        {"count": 0},
        {"latency_ms": "slow"},
        [1, 2],
    ],
)
async def test_invalid_fault_is_refused(sim: Sim, body: object) -> None:
    response = await sim.http.post("/_sim/faults", json=body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


async def test_rate_limit_fault_is_retried_by_the_client(sim: Sim) -> None:
    fault = {"endpoints": ["preauth"], "status": 429, "count": 2}
    await sim.http.post("/_sim/faults", json=fault)
    assert (await sim.duo.preauth(username="nobody")).outcome is PreauthOutcome.ENROLL
    assert sim.sleeps == [1.0, 2.0]


async def test_reset_empties_users(sim: Sim) -> None:
    await sim.add_user("alice")
    assert len((await sim.http.get("/_sim/users")).json()) == 1
    assert (await sim.http.post("/_sim/reset")).status_code == 200
    assert (await sim.http.get("/_sim/users")).json() == []
    assert (await sim.duo.preauth(username="alice")).outcome is PreauthOutcome.ENROLL


async def test_unknown_auth_path_is_a_duo_404(sim: Sim) -> None:
    response = await sim.signed("GET", "/auth/v2/nope", {})
    assert response.status_code == 404
    assert fail_envelope(response)["code"] == 40401


async def test_phone_page(sim: Sim) -> None:
    response = await sim.http.get("/_sim/phone")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Approve" in response.text


async def test_batch_approve(sim: Sim) -> None:
    await sim.add_user("alice")
    txids = [await sim.push(), await sim.push()]
    body = {"txids": [*txids, "no-such-txid"]}
    response = await sim.http.post("/_sim/batch/approve", json=body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["settled"] == txids
    assert list(answer["refused"]) == ["no-such-txid"]
    for txid in txids:
        assert (await sim.duo.auth_status(txid)).result is AuthResult.ALLOW


async def test_logo_then_no_logo(sim: Sim) -> None:
    assert (await sim.duo.logo()).startswith(PNG_MAGIC)
    response = await sim.signed("GET", "/auth/v2/logo", {})
    assert response.headers["content-type"] == "image/png"
    integration = {"ikey": IKEY, "skey": SKEY, "has_logo": False}
    assert (await sim.http.post("/_sim/integrations", json=integration)).status_code == 200
    response = await sim.signed("GET", "/auth/v2/logo", {})
    assert response.status_code == 400
    assert fail_envelope(response)["code"] == 40002
    with pytest.raises(DuoApiError):
        await sim.duo.logo()
