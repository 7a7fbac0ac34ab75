"""The forward-auth and health routes answered before FastAPI's middlewares: they keep the
hardening headers, refuse other methods, and a failing check is a 500 (the proxy refuses),
never an allow."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from twofa.config import Mode, Settings
from twofa.services.access.forward_auth import AuthzAnswer, OriginalRequest, SignedInUser, Verdict
from twofa.web.app import create_app
from twofa.web.security_headers import SECURITY_HEADERS

ALICE = SignedInUser(1, "alice", "Alice Ärlig", "alice@example.test", ("eng", "ops"), True)


class StubForwardAuth:
    def __init__(self, answer: AuthzAnswer | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str | None, OriginalRequest]] = []

    def trusts_proxy(self, peer: str) -> bool:
        return peer == "127.0.0.1"

    async def check(self, token: str | None, original: OriginalRequest) -> AuthzAnswer:
        self.asked.append((token, original))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def client_for(
    answer: AuthzAnswer | Exception, peer: str = "127.0.0.1"
) -> tuple[httpx.AsyncClient, StubForwardAuth]:
    app = create_app(Settings(mode=Mode.DEV, database_url="sqlite+aiosqlite:///:memory:"))
    stub = StubForwardAuth(answer)
    app.state.gateway = SimpleNamespace(
        forward_auth=stub, settings=SimpleNamespace(public_url="https://login.example.test/")
    )
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://twofa"), stub


NGINX: dict[str, Any] = {
    "X-Original-URL": "https://app.example.test/browse/X-1?a=1",
    "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
    "Cookie": "JSESSIONID=abc; twofa_session=tok-123; other=x",
}


async def test_an_allow_carries_the_identity_for_the_proxy_only() -> None:
    client, stub = client_for(AuthzAnswer(Verdict.ALLOW, ALICE))
    async with client:
        answer = await client.get("/authz/nginx", headers=NGINX)
    assert answer.status_code == 200
    assert answer.headers["remote-user"] == "alice"
    assert dict(answer.headers.raw)[b"remote-name"] == "Alice Ärlig".encode()  # UTF-8
    assert answer.headers["remote-groups"] == "eng,ops"
    assert answer.headers["cache-control"] == "no-store"
    token, original = stub.asked[0]
    assert token == "tok-123"
    assert original.url == "https://app.example.test/browse/X-1?a=1"
    assert original.client_ip == "203.0.113.9"  # the hop the trusted proxy appended


async def test_sign_in_is_a_401_for_nginx_and_a_redirect_for_traefik() -> None:
    client, _ = client_for(AuthzAnswer(Verdict.SIGN_IN, reason="not signed in"))
    async with client:
        nginx = await client.get("/authz/nginx", headers=NGINX)
        traefik = await client.get(
            "/authz/forward",
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "app.example.test",
                "X-Forwarded-Uri": "/browse/X-1?a=1&b=%C3%BC",
            },
        )
    assert nginx.status_code == 401
    assert "remote-user" not in nginx.headers
    assert traefik.status_code == 302
    for name, value in SECURITY_HEADERS.items():  # the browser sees this one
        assert traefik.headers[name] == value
    assert traefik.headers["location"] == (
        "https://login.example.test/login?next=https%3A%2F%2Fapp.example.test"
        "%2Fbrowse%2FX-1%3Fa%3D1%26b%3D%25C3%25BC"
    )


async def test_an_untrusted_caller_is_refused_whatever_it_claims() -> None:
    outsider, stub = client_for(AuthzAnswer(Verdict.ALLOW, ALICE), peer="192.0.2.50")
    async with outsider:
        answer = await outsider.get("/authz/nginx", headers=NGINX)
    assert answer.status_code == 403
    assert "remote-user" not in answer.headers
    assert answer.headers["x-frame-options"] == "DENY"  # a refusal may reach a browser
    assert stub.asked == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_other_methods_are_refused(method: str) -> None:
    client, stub = client_for(AuthzAnswer(Verdict.ALLOW, ALICE))
    async with client:
        answer = await client.request(method, "/authz/nginx", headers=NGINX)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD"
    assert stub.asked == []


async def test_a_failing_check_is_a_500_never_an_allow(caplog: pytest.LogCaptureFixture) -> None:
    client, _ = client_for(RuntimeError("database went away"))
    async with client:
        answer = await client.get("/authz/nginx", headers=NGINX)
    assert answer.status_code == 500
    assert "remote-user" not in answer.headers
    assert "database went away" in caplog.text


async def test_health_is_a_bare_200() -> None:
    client, _ = client_for(AuthzAnswer(Verdict.FORBIDDEN))
    async with client:
        answer = await client.get("/healthz")
    assert answer.status_code == 200
    assert answer.text == "ok"
    assert answer.headers["x-frame-options"] == "DENY"
