"""Back-Channel Logout's logout token and its delivery (services.idp.backchannel): the token
is explicitly typed, signed by a key of the JWKS, names the client, the user and the session
(by an opaque `sid`, never the session id) and carries the logout event and no nonce; a
delivery is retried on a network error or a 5xx, not on a 4xx (the relying party refused it
for good), with a fresh `jti` each attempt."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from tests.unit.services.conftest import START
from twofa.clock import FrozenClock
from twofa.services.idp.backchannel import BackchannelLogout, LogoutNotice
from twofa.services.idp.claims import BACKCHANNEL_LOGOUT_EVENT, session_sid
from twofa.services.runtime import Gateway

NOTICE = LogoutNotice(
    application="Wiki",
    client_id="client-of-the-wiki",
    uri="https://wiki.example.com/backchannel",
    username="alice",
    subject="subject-of-alice",
    sid=session_sid("a" * 64),
)


def backchannel(
    gateway: Gateway, answer: Callable[[httpx.Request], httpx.Response]
) -> tuple[BackchannelLogout, list[httpx.Request]]:
    """A BackchannelLogout whose HTTP client records each request and answers `answer`."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    logout = BackchannelLogout(
        gateway.db, gateway.clock, gateway.oidc_keys, "https://sso.example.com/", http,
        retry_delays_s=(0.0, 0.0),
    )  # fmt: skip
    return logout, seen


def posted_token(request: httpx.Request) -> str:
    form = dict(httpx.QueryParams(request.content.decode("ascii")))
    assert set(form) == {"logout_token"}
    return form["logout_token"]


def test_a_sid_is_opaque_stable_and_one_per_session() -> None:
    session_id = hashlib.sha256(b"a cookie").hexdigest()
    sid = session_sid(session_id)
    assert sid == session_sid(session_id)
    assert sid != session_sid(hashlib.sha256(b"another cookie").hexdigest())
    assert session_id not in sid
    assert sid not in session_id
    assert sid != hashlib.sha256(session_id.encode()).hexdigest()
    assert len(sid) == 43  # base64url of 256 bits: within OAuth's client-id syntax


async def test_a_logout_token_is_typed_signed_and_names_the_client_user_and_session(
    gateway: Gateway, clock: FrozenClock
) -> None:
    logout, _ = backchannel(gateway, lambda _: httpx.Response(200))
    token = await logout.logout_token(NOTICE)
    keys = KeySet.import_key_set(await gateway.oidc_keys.jwks())  # the public JWKS
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    assert decoded.header["typ"] == "logout+jwt"
    assert decoded.header["kid"] in {key["kid"] for key in (await gateway.oidc_keys.jwks())["keys"]}
    claims = decoded.claims
    assert claims["iss"] == "https://sso.example.com"
    assert claims["aud"] == "client-of-the-wiki"
    assert claims["sub"] == "subject-of-alice"
    assert claims["sid"] == NOTICE.sid
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert claims["iat"] == int(START.timestamp())
    assert claims["exp"] == claims["iat"] + 120
    assert len(claims["jti"]) == 32
    assert "nonce" not in claims


async def test_a_logout_token_does_not_verify_with_another_issuers_keys(gateway: Gateway) -> None:
    logout, _ = backchannel(gateway, lambda _: httpx.Response(200))
    token = await logout.logout_token(NOTICE)
    kid = jwt.decode(token, await gateway.oidc_keys.published_keys()).header["kid"]
    impostor = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256"}, private=True)
    with pytest.raises(JoseError):  # the same kid, another key: the signature does not hold
        jwt.decode(token, KeySet([impostor]), algorithms=["RS256"])


async def test_a_delivery_posts_the_token_as_a_form_once_it_is_taken(gateway: Gateway) -> None:
    logout, seen = backchannel(gateway, lambda _: httpx.Response(200))
    delivery = await logout.send(NOTICE)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (True, 1, 200)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == NOTICE.uri
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert posted_token(request).count(".") == 2


async def test_a_delivery_is_retried_after_a_5xx_with_a_fresh_jti(gateway: Gateway) -> None:
    answers = iter([httpx.Response(503), httpx.Response(200)])
    logout, seen = backchannel(gateway, lambda _: next(answers))
    delivery = await logout.send(NOTICE)
    assert (delivery.delivered, delivery.attempts) == (True, 2)
    jtis = {jwt.decode(posted_token(r), await gateway.oidc_keys.published_keys()).claims["jti"]
            for r in seen}  # fmt: skip
    assert len(jtis) == 2


async def test_a_delivery_refused_with_a_4xx_is_not_retried(gateway: Gateway) -> None:
    logout, seen = backchannel(gateway, lambda _: httpx.Response(400, text="bad token"))
    delivery = await logout.send(NOTICE)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (False, 1, 400)
    assert "bad token" in delivery.error
    assert len(seen) == 1


async def test_a_relying_party_unreachable_is_tried_three_times_then_given_up(
    gateway: Gateway,
) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    logout, seen = backchannel(gateway, unreachable)
    delivery = await logout.send(NOTICE)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (False, 3, None)
    assert "ConnectError" in delivery.error
    assert len(seen) == 3
