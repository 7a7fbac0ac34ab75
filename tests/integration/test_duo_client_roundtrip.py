"""twofa's own Duo client against the simulator over real HTTP: the flows the gateway runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.servers import free_port
from twofa.duo import (
    AuthRequest,
    DuoApiError,
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoRateLimited,
    DuoServerError,
    DuoTimeout,
    DuoTimeouts,
    DuoTransportError,
    make_http_client,
)
from twofa.duo.models import (
    AuthResult,
    EnrollmentStatus,
    Factor,
    PreauthOutcome,
    PushRequest,
    TransactionStatus,
)


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
async def client(
    simulator: RunningSimulator, sleeps: RecordedSleep
) -> AsyncIterator[DuoAuthClient]:
    endpoint = DuoEndpoint.parse(simulator.base_url, allow_custom_host=True)
    async with make_http_client(endpoint) as http:
        yield DuoAuthClient(
            http,
            credentials=DuoCredentials(simulator.ikey, simulator.skey),
            endpoint=endpoint,
            # Generous: these tests are about outcomes, not timeouts, and on a 2-core CI host
            # running Chromium beside them the test process can stall for two seconds (a
            # 2-second connect timeout once failed CI on a loopback connect).
            timeouts=DuoTimeouts(connect=10, read=15, long_poll_read=20),
            sleep=sleeps,
        )


def push_for(username: str) -> AuthRequest:
    return AuthRequest(
        factor=Factor.PUSH,
        username=username,
        push=PushRequest(
            type="Login request",
            display_username="Alice Liddell",
            pushinfo=(("Application", "Jira"), ("IP address", "203.0.113.7")),
        ),
        ipaddr="203.0.113.7",
    )


async def test_enrol_activate_preauth_push_approve_round_trip(
    client: DuoAuthClient, simulator: RunningSimulator
) -> None:
    assert (await client.preauth(username="alice")).outcome is PreauthOutcome.ENROLL
    enrollment = await client.enroll(username="alice")
    status = await client.enroll_status(
        user_id=enrollment.user_id, activation_code=enrollment.activation_code
    )
    assert status is EnrollmentStatus.WAITING
    qr = await asyncio.to_thread(httpx.get, enrollment.activation_barcode)
    assert qr.headers["content-type"] == "image/png"
    simulator.control.post("/_sim/activate", json={"activation_code": enrollment.activation_code})
    status = await client.enroll_status(
        user_id=enrollment.user_id, activation_code=enrollment.activation_code
    )
    assert status is EnrollmentStatus.SUCCESS
    preauth = await client.preauth(username="alice", ipaddr="203.0.113.7")
    assert preauth.outcome is PreauthOutcome.AUTH
    assert len(preauth.push_devices) == 1
    txid = await client.start_auth(push_for("alice"))
    first = await client.auth_status(txid)
    assert (first.result, first.status) == (AuthResult.WAITING, TransactionStatus.PUSHED)
    [pending] = simulator.pending("alice")
    assert pending["pushinfo"] == {"Application": "Jira", "IP address": "203.0.113.7"}
    assert pending["display_username"] == "Alice Liddell"
    simulator.settle(txid, "approve").raise_for_status()
    final = await client.auth_status(txid)
    assert final.result is AuthResult.ALLOW
    assert final.trusted_device_token is not None
    remembered = await client.preauth(
        username="alice", trusted_device_token=final.trusted_device_token
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
async def test_push_that_is_not_approved_ends_in_deny(
    client: DuoAuthClient, simulator: RunningSimulator, action: str, status: TransactionStatus
) -> None:
    simulator.add_user("bob")
    txid = await client.start_auth(push_for("bob"))
    await client.auth_status(txid)
    simulator.settle(txid, action).raise_for_status()
    outcome = await client.auth_status(txid)
    assert (outcome.result, outcome.status) == (AuthResult.DENY, status)
    assert outcome.trusted_device_token is None


async def test_auth_status_long_poll_returns_when_the_person_approves(
    client: DuoAuthClient, simulator: RunningSimulator
) -> None:
    simulator.add_user("carl")
    txid = await client.start_auth(push_for("carl"))
    await client.auth_status(txid)  # the first answer reports "pushed" at once
    waiting = asyncio.create_task(client.auth_status(txid))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "auth_status should hold while nothing changes"
    await asyncio.to_thread(simulator.settle, txid, "approve")
    outcome = await asyncio.wait_for(waiting, timeout=5)
    assert outcome.result is AuthResult.ALLOW


async def test_auth_status_without_news_answers_waiting_after_the_hold(
    client: DuoAuthClient, simulator: RunningSimulator
) -> None:
    simulator.add_user("cora")
    txid = await client.start_auth(push_for("cora"))
    await client.auth_status(txid)
    held = await client.auth_status(txid)  # the simulator under test holds 2 s
    assert (held.result, held.status) == (AuthResult.WAITING, TransactionStatus.PUSHED)


async def test_synchronous_auth_returns_after_approval(
    client: DuoAuthClient, simulator: RunningSimulator
) -> None:
    simulator.add_user("dina")
    request = AuthRequest(factor=Factor.AUTO, username="dina")
    pending = asyncio.create_task(client.auth(request))
    for _ in range(100):
        if found := await asyncio.to_thread(simulator.pending, "dina"):
            break
        await asyncio.sleep(0.02)
    await asyncio.to_thread(simulator.settle, str(found[0]["txid"]), "approve")
    outcome = await asyncio.wait_for(pending, timeout=5)
    assert outcome.status is TransactionStatus.ALLOW


async def test_rate_limited_requests_back_off_then_succeed(
    client: DuoAuthClient, simulator: RunningSimulator, sleeps: RecordedSleep
) -> None:
    simulator.add_user("ed")
    simulator.control.post(
        "/_sim/faults", json={"endpoints": ["preauth"], "status": 429, "count": 3}
    )
    preauth = await client.preauth(username="ed")
    assert preauth.outcome is PreauthOutcome.AUTH
    assert [int(delay) for delay in sleeps.delays] == [1, 2, 4]


async def test_rate_limited_beyond_32_seconds_raises(
    client: DuoAuthClient, simulator: RunningSimulator, sleeps: RecordedSleep
) -> None:
    simulator.control.post("/_sim/faults", json={"endpoints": ["check"], "status": 429})
    with pytest.raises(DuoRateLimited) as caught:
        await client.check()
    assert caught.value.code == 42901
    assert [int(delay) for delay in sleeps.delays] == [1, 2, 4, 8, 16, 32]


async def test_server_error_is_not_retried(
    client: DuoAuthClient, simulator: RunningSimulator, sleeps: RecordedSleep
) -> None:
    simulator.control.post("/_sim/faults", json={"endpoints": ["check"], "status": 503, "count": 1})
    with pytest.raises(DuoServerError) as caught:
        await client.check()
    assert caught.value.code == 50301
    assert sleeps.delays == []
    assert await client.check() > 0


async def test_slow_duo_becomes_a_timeout(simulator: RunningSimulator) -> None:
    simulator.control.post("/_sim/faults", json={"endpoints": ["check"], "latency_ms": 1500})
    endpoint = DuoEndpoint.parse(simulator.base_url, allow_custom_host=True)
    async with make_http_client(endpoint) as http:
        impatient = DuoAuthClient(
            http,
            credentials=DuoCredentials(simulator.ikey, simulator.skey),
            endpoint=endpoint,
            timeouts=DuoTimeouts(connect=1, read=0.3, long_poll_read=1),
        )
        with pytest.raises(DuoTimeout):
            await impatient.check()


async def test_wrong_secret_key_is_a_bad_credentials_error(simulator: RunningSimulator) -> None:
    endpoint = DuoEndpoint.parse(simulator.base_url, allow_custom_host=True)
    async with make_http_client(endpoint) as http:
        wrong = DuoAuthClient(
            http, credentials=DuoCredentials(simulator.ikey, "x" * 40), endpoint=endpoint
        )
        with pytest.raises(DuoApiError) as caught:
            await wrong.check()
        assert caught.value.is_bad_credentials
        assert caught.value.code == 40103
        assert await wrong.ping() > 0  # ping is unsigned, so it still answers


async def test_v2_signing_client_is_accepted(simulator: RunningSimulator) -> None:
    endpoint = DuoEndpoint.parse(simulator.base_url, allow_custom_host=True)
    async with make_http_client(endpoint) as http:
        v2 = DuoAuthClient(
            http,
            credentials=DuoCredentials(simulator.ikey, simulator.skey),
            endpoint=endpoint,
            sig_version=2,
        )
        assert (await v2.preauth(username="nobody")).outcome is PreauthOutcome.ENROLL


async def test_unreachable_duo_is_a_transport_error(sleeps: RecordedSleep) -> None:
    endpoint = DuoEndpoint.parse(f"http://127.0.0.1:{free_port()}", allow_custom_host=True)
    async with make_http_client(endpoint) as http:
        client = DuoAuthClient(http, credentials=DuoCredentials("I", "S"), endpoint=endpoint)
        with pytest.raises(DuoTransportError):
            await client.check()
