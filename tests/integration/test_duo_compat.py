"""The simulator over real HTTP against the official duo_client and against twofa's client.

If these pass, a client that works here works against Duo, and the other way round.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import duo_client
import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.servers import free_port
from twofa.duo.signing import format_date, sign_request


@pytest.fixture(params=[5, 2], ids=["sig-v5", "sig-v2"])
def official(simulator: RunningSimulator, request: pytest.FixtureRequest) -> duo_client.Auth:
    return duo_client.Auth(
        simulator.ikey,
        simulator.skey,
        host="127.0.0.1",
        port=simulator.port,
        ca_certs="HTTP",
        sig_version=request.param,
        timeout=30,
    )


def approve_when_pushed(
    simulator: RunningSimulator, username: str, action: str
) -> threading.Thread:
    """Plays the person: waits for a push to arrive for `username`, then settles it."""

    def run() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for transaction in simulator.pending(username):
                simulator.settle(str(transaction["txid"]), action)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def activate(simulator: RunningSimulator, activation_code: str) -> None:
    response = simulator.control.post("/_sim/activate", json={"activation_code": activation_code})
    response.raise_for_status()


def test_official_client_ping_check_logo(official: duo_client.Auth) -> None:
    assert abs(official.ping()["time"] - time.time()) < 5
    assert abs(official.check()["time"] - time.time()) < 5
    assert official.logo().startswith(b"\x89PNG")


def test_official_client_enrolls_and_activates(
    official: duo_client.Auth, simulator: RunningSimulator
) -> None:
    enrollment = official.enroll(username="carol", valid_secs=600, bypass_codes=2)
    assert enrollment["activation_code"].startswith("duo://")
    assert enrollment["username"] == "carol"
    assert len(enrollment["bypass_codes"]) == 2
    assert enrollment["expiration"] > time.time() + 500
    assert official.enroll_status(enrollment["user_id"], enrollment["activation_code"]) == "waiting"
    assert official.preauth(username="carol")["result"] == "enroll"
    activate(simulator, enrollment["activation_code"])
    assert official.enroll_status(enrollment["user_id"], enrollment["activation_code"]) == "success"
    preauth = official.preauth(username="carol")
    assert preauth["result"] == "auth"
    assert "push" in preauth["devices"][0]["capabilities"]


def test_official_client_enroll_of_existing_username_is_40002(
    official: duo_client.Auth, simulator: RunningSimulator
) -> None:
    simulator.add_user("dave")
    with pytest.raises(RuntimeError, match="400 Invalid request parameters"):
        official.enroll(username="dave")


def test_official_client_async_push_approved(
    official: duo_client.Auth, simulator: RunningSimulator
) -> None:
    simulator.add_user("erin")
    started = official.auth(
        "push",
        username="erin",
        device="auto",
        async_txn=True,
        type="Jira login",
        display_username="Erin Ö",
        pushinfo="Application=Jira&IP=203.0.113.9",
        ipaddr="203.0.113.9",
    )
    [pending] = simulator.pending("erin")
    assert pending["txid"] == started["txid"]
    assert pending["type"] == "Jira login"
    assert pending["display_username"] == "Erin Ö"
    assert pending["pushinfo"] == {"Application": "Jira", "IP": "203.0.113.9"}
    assert pending["ipaddr"] == "203.0.113.9"
    first = official.auth_status(started["txid"])
    assert first["waiting"]
    assert first["status"] == "pushed"
    simulator.settle(started["txid"], "approve").raise_for_status()
    final = official.auth_status(started["txid"])
    assert final["success"]
    assert final["status"] == "allow"
    assert final["trusted_device_token"]


@pytest.mark.parametrize(("action", "status"), [("approve", "allow"), ("deny", "deny")])
def test_official_client_synchronous_auth_blocks_until_settled(
    official: duo_client.Auth, simulator: RunningSimulator, action: str, status: str
) -> None:
    simulator.add_user("frank")
    person = approve_when_pushed(simulator, "frank", action)
    answer = official.auth("push", username="frank", device="auto")
    person.join()
    assert answer["status"] == status
    assert answer["result"] == ("allow" if action == "approve" else "deny")


def test_official_client_sms_then_passcode(
    official: duo_client.Auth, simulator: RunningSimulator
) -> None:
    simulator.add_user("gina")
    sent = official.auth("sms", username="gina", device="auto")
    assert (sent["result"], sent["status"]) == ("deny", "sent")
    [user] = simulator.control.get("/_sim/users").json()
    passcode = user["passcodes"][0]
    assert official.auth("passcode", username="gina", passcode=passcode)["result"] == "allow"
    assert official.auth("passcode", username="gina", passcode=passcode)["result"] == "deny"


def test_authelia_style_v2_sha512_form_request_is_accepted(simulator: RunningSimulator) -> None:
    """duo_api_golang (Authelia) and duo_unix send v2 + HMAC-SHA512 with a form body."""
    simulator.add_user("hank")
    for date_header in ("Date", "X-Duo-Date"):
        request = sign_request(
            ikey=simulator.ikey,
            skey=simulator.skey,
            host=f"127.0.0.1:{simulator.port}",
            method="POST",
            path="/auth/v2/preauth",
            params={"username": "hank", "ipaddr": "203.0.113.5"},
            date=format_date(datetime.now(UTC)),
            sig_version=2,
            date_header=date_header,  # type: ignore[arg-type]
        )
        response = simulator.control.post(
            request.target, headers=request.headers, content=request.body
        )
        assert response.status_code == 200, response.text
        assert response.json()["response"]["result"] == "auth"


def signed_preauth(simulator: RunningSimulator, **overrides: object) -> httpx.Response:
    """A valid v5 preauth, then one field spoiled as `overrides` says."""
    date = overrides.pop("date", format_date(datetime.now(UTC)))
    request = sign_request(
        ikey=simulator.ikey,
        skey=str(overrides.pop("skey", simulator.skey)),
        host=str(overrides.pop("host", "127.0.0.1")),
        method="POST",
        path="/auth/v2/preauth",
        params={"username": "ivy"},
        date=str(date),
    )
    body = overrides.pop("body", request.body)
    headers = {**request.headers, **overrides.pop("headers", {})}  # type: ignore[dict-item]
    assert not overrides
    return simulator.control.post(request.target, headers=headers, content=body)


STALE = format_date(datetime.now(UTC) - timedelta(seconds=400))


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        ({}, None),
        ({"skey": "not-the-secret"}, 40103),
        ({"body": b'{"username":"ivx"}'}, 40103),
        ({"host": "api-other.duosecurity.com"}, 40103),
        ({"date": STALE}, 40103),
        ({"headers": {"Authorization": "Basic RElYWFg6YWJj"}}, 40102),
        ({"headers": {"Authorization": ""}}, 40101),
    ],
    ids=["valid", "signature", "body", "host", "stale-date", "unknown-ikey", "no-credentials"],
)
def test_tampered_requests_get_401_with_duo_code(
    simulator: RunningSimulator, spoil: dict[str, object], code: int | None
) -> None:
    simulator.add_user("ivy")
    response = signed_preauth(simulator, **spoil)
    if code is None:
        assert response.status_code == 200
        return
    assert response.status_code == 401
    assert response.json()["stat"] == "FAIL"
    assert response.json()["code"] == code


def test_tampered_query_parameter_is_refused(simulator: RunningSimulator) -> None:
    request = sign_request(
        ikey=simulator.ikey,
        skey=simulator.skey,
        host="127.0.0.1",
        method="GET",
        path="/auth/v2/auth_status",
        params={"txid": "a"},
        date=format_date(datetime.now(UTC)),
    )
    response = simulator.control.get(
        request.target.replace("txid=a", "txid=b"), headers=request.headers
    )
    assert (response.status_code, response.json()["code"]) == (401, 40103)


def test_cli_serves_the_simulator() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twofa.cli.main",
            "simulator",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/auth/v2/ping", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert answer.json()["stat"] == "OK"
        assert "Approve" in httpx.get(f"http://127.0.0.1:{port}/_sim/phone").text
    finally:
        process.terminate()
        process.wait(timeout=10)
