"""The OpenID Connect code flow at the service: codes bound to their client, redirect URI and
PKCE challenge, single-use (a replay revokes what the first use issued), expiring after 60 s;
prompt and max_age; who may use a client; ID tokens signed by a key the JWKS publishes."""

from __future__ import annotations

import dataclasses
import urllib.parse
from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.unit.services.conftest import BROWSER, add_user, audit_rows, sign_in
from twofa.clock import FrozenClock
from twofa.services.idp.admission import SecondFactorFirst, SignInFirst
from twofa.services.idp.applications import IssuedApplication, NewApplication
from twofa.services.idp.claims import s256
from twofa.services.idp.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidToken,
    UnknownClient,
    UnregisteredRedirect,
)
from twofa.services.idp.logout import LogoutRefused
from twofa.services.idp.provider import AuthorizeRequest, RedirectToClient
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import SessionView

CALLBACK = "https://app.example.com/cb"
VERIFIER = "v" * 43 + "-verifier"


async def register(gateway: Gateway, **fields: object) -> IssuedApplication:
    new = NewApplication(str(fields.pop("name", "App")), [CALLBACK], **fields)  # type: ignore[arg-type]
    return await gateway.applications.add(new, actor="cli")


async def bob_session(gateway: Gateway) -> SessionView:
    await add_user(gateway, "bob")
    outcome = await sign_in(gateway, "bob")
    assert outcome.session is not None
    return outcome.session


def ask(client_id: str, **extra: str) -> AuthorizeRequest:
    query = {
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "openid profile groups",
        "state": "st-1",
        "nonce": "n-1",
        **extra,
    }
    return AuthorizeRequest.of(query)


def query_of(outcome: object) -> dict[str, str]:
    assert isinstance(outcome, RedirectToClient), outcome
    assert outcome.url.startswith(CALLBACK + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(outcome.url).query))


async def code_for(
    gateway: Gateway, app: IssuedApplication, session: SessionView, **extra: str
) -> str:
    outcome = await gateway.oidc.authorize(
        ask(app.application.client_id, **extra), session, BROWSER
    )
    return query_of(outcome)["code"]


def exchange(
    app: IssuedApplication, code: str, **extra: str
) -> tuple[dict[str, str], tuple[str, str]]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, **extra}
    assert app.client_secret is not None
    return form, (app.application.client_id, app.client_secret)


async def test_a_code_gives_an_id_token_signed_by_a_published_key(gateway: Gateway) -> None:
    app = await register(gateway, second_factor_required=False)
    session = await bob_session(gateway)

    code = await code_for(gateway, app, session)
    tokens = await gateway.oidc.tokens.token(*exchange(app, code), BROWSER)

    jwks = KeySet.import_key_set(await gateway.oidc_keys.jwks())  # type: ignore[arg-type]
    claims = jwt.decode(tokens["id_token"], jwks, algorithms=["RS256"]).claims
    assert claims["iss"] == gateway.oidc.issuer
    assert claims["aud"] == app.application.client_id
    assert claims["nonce"] == "n-1"
    assert claims["amr"] == ["pwd"]
    assert claims["preferred_username"] == "bob"
    assert claims["sub"] != "bob"
    assert len(claims["sub"]) >= 32
    assert claims["groups"] == []
    info = await gateway.oidc.tokens.userinfo(tokens["access_token"])
    assert info["sub"] == claims["sub"]


async def test_a_replayed_code_is_refused_and_revokes_the_first_access_token(
    gateway: Gateway,
) -> None:
    app = await register(gateway, second_factor_required=False)
    code = await code_for(gateway, app, await bob_session(gateway))
    tokens = await gateway.oidc.tokens.token(*exchange(app, code), BROWSER)

    with pytest.raises(InvalidGrant, match="used already"):
        await gateway.oidc.tokens.token(*exchange(app, code), BROWSER)
    with pytest.raises(InvalidToken):
        await gateway.oidc.tokens.userinfo(tokens["access_token"])
    assert [r.outcome for r in await audit_rows(gateway, "oidc_code")] == ["replayed"]


async def test_a_code_expires_after_sixty_seconds(gateway: Gateway, clock: FrozenClock) -> None:
    app = await register(gateway, second_factor_required=False)
    code = await code_for(gateway, app, await bob_session(gateway))
    clock.advance(timedelta(seconds=61))

    with pytest.raises(InvalidGrant, match="expired"):
        await gateway.oidc.tokens.token(*exchange(app, code), BROWSER)


async def test_a_code_is_bound_to_its_client_and_redirect_uri(gateway: Gateway) -> None:
    app = await register(gateway, second_factor_required=False)
    other = await register(gateway, name="Other", second_factor_required=False)
    session = await bob_session(gateway)

    code = await code_for(gateway, app, session)
    with pytest.raises(InvalidGrant, match="another client"):
        await gateway.oidc.tokens.token(*exchange(other, code), BROWSER)
    code = await code_for(gateway, app, session)
    with pytest.raises(InvalidGrant, match="redirect_uri"):
        await gateway.oidc.tokens.token(*exchange(app, code, redirect_uri=CALLBACK + "x"), BROWSER)


async def test_a_wrong_secret_or_unknown_client_is_invalid_client(gateway: Gateway) -> None:
    app = await register(gateway, second_factor_required=False)
    code = await code_for(gateway, app, await bob_session(gateway))
    form, (client_id, secret) = exchange(app, code)

    with pytest.raises(InvalidClient):
        await gateway.oidc.tokens.token(form, (client_id, secret[:-1] + "x"), BROWSER)
    with pytest.raises(InvalidClient):
        await gateway.oidc.tokens.token(form, ("no-such-client", secret), BROWSER)
    posted = {**form, "client_id": client_id, "client_secret": secret}  # client_secret_post
    assert "id_token" in await gateway.oidc.tokens.token(posted, None, BROWSER)


async def test_a_public_client_must_use_pkce_s256(gateway: Gateway) -> None:
    app = await register(gateway, public=True, second_factor_required=False)
    client_id = app.application.client_id
    session = await bob_session(gateway)

    refused = await gateway.oidc.authorize(ask(client_id), session, BROWSER)
    assert query_of(refused)["error"] == "invalid_request"
    plain = await gateway.oidc.authorize(
        ask(client_id, code_challenge=VERIFIER, code_challenge_method="plain"), session, BROWSER
    )
    assert query_of(plain)["error"] == "invalid_request"

    pkce = {"code_challenge": s256(VERIFIER), "code_challenge_method": "S256"}
    form = {"grant_type": "authorization_code", "redirect_uri": CALLBACK, "client_id": client_id}
    code = await code_for(gateway, app, session, **pkce)
    with pytest.raises(InvalidGrant, match="code_verifier"):
        await gateway.oidc.tokens.token({**form, "code": code}, None, BROWSER)
    code = await code_for(gateway, app, session, **pkce)
    wrong = VERIFIER[:-1] + "X"
    with pytest.raises(InvalidGrant, match="code_verifier"):
        await gateway.oidc.tokens.token(
            {**form, "code": code, "code_verifier": wrong}, None, BROWSER
        )
    code = await code_for(gateway, app, session, **pkce)
    tokens = await gateway.oidc.tokens.token(
        {**form, "code": code, "code_verifier": VERIFIER}, None, BROWSER
    )
    assert tokens["token_type"] == "Bearer"


async def test_unknown_client_or_unregistered_redirect_raises_never_redirects(
    gateway: Gateway,
) -> None:
    app = await register(gateway)
    with pytest.raises(UnknownClient):
        await gateway.oidc.authorize(ask("nope"), None, BROWSER)
    elsewhere = dataclasses.replace(ask(app.application.client_id), redirect_uri=CALLBACK + "/x")
    with pytest.raises(UnregisteredRedirect):
        await gateway.oidc.authorize(elsewhere, None, BROWSER)


async def test_prompt_none_without_a_session_is_login_required(gateway: Gateway) -> None:
    app = await register(gateway)
    outcome = await gateway.oidc.authorize(
        ask(app.application.client_id, prompt="none"), None, BROWSER
    )
    assert query_of(outcome) == {
        "error": "login_required",
        "error_description": "no signed-in session",
        "state": "st-1",
        "iss": gateway.oidc.issuer,
    }
    assert await gateway.oidc.authorize(ask(app.application.client_id), None, BROWSER) == (
        SignInFirst(fresh=False)
    )


async def test_prompt_login_and_max_age_ask_for_a_fresh_sign_in(
    gateway: Gateway, clock: FrozenClock
) -> None:
    app = await register(gateway, second_factor_required=False)
    client_id = app.application.client_id
    session = await bob_session(gateway)

    assert await gateway.oidc.authorize(ask(client_id, prompt="login"), session, BROWSER) == (
        SignInFirst(fresh=True)
    )
    clock.advance(timedelta(seconds=300))
    old = await gateway.oidc.authorize(ask(client_id, max_age="120"), session, BROWSER)
    assert old == SignInFirst(fresh=True)
    recent = await gateway.oidc.authorize(ask(client_id, max_age="600"), session, BROWSER)
    assert "code" in query_of(recent)


async def test_a_client_requiring_a_second_factor_sends_a_password_session_to_get_one(
    gateway: Gateway, clock: FrozenClock
) -> None:
    app = await register(gateway)  # second factor required: the default
    session = await bob_session(gateway)
    assert await gateway.oidc.authorize(ask(app.application.client_id), session, BROWSER) == (
        SecondFactorFirst()
    )
    none = await gateway.oidc.authorize(
        ask(app.application.client_id, prompt="none"), session, BROWSER
    )
    assert query_of(none)["error"] == "interaction_required"

    passed = dataclasses.replace(session, second_factor_at=clock.now())
    code = await code_for(gateway, app, passed)
    tokens = await gateway.oidc.tokens.token(*exchange(app, code), BROWSER)
    claims = jwt.decode(
        tokens["id_token"],
        KeySet.import_key_set(await gateway.oidc_keys.jwks()),  # type: ignore[arg-type]
    ).claims
    assert claims["amr"] == ["pwd", "mfa"]  # no challenge recorded: the method is not named
    assert claims["acr"] == "urn:twofa:acr:mfa"


async def test_a_user_not_allowed_on_the_client_is_access_denied(gateway: Gateway) -> None:
    app = await register(gateway, allowed_groups=["finance"], second_factor_required=False)
    session = await bob_session(gateway)
    outcome = await gateway.oidc.authorize(ask(app.application.client_id), session, BROWSER)
    assert query_of(outcome)["error"] == "access_denied"
    assert [r.outcome for r in await audit_rows(gateway, "oidc_authorize")] == ["deny"]


async def test_rotated_keys_stay_published_for_the_overlap(
    gateway: Gateway, clock: FrozenClock
) -> None:
    first = {key["kid"] for key in (await gateway.oidc_keys.jwks())["keys"]}
    assert {kid.split("-")[0] for kid in first} == {"rs256", "es256"}
    new = set(await gateway.oidc_keys.rotate(actor="cli"))
    assert {key["kid"] for key in (await gateway.oidc_keys.jwks())["keys"]} == first | new
    assert (await gateway.oidc_keys.signing_key()).kid in new
    clock.advance(timedelta(days=1, seconds=1))
    assert {key["kid"] for key in (await gateway.oidc_keys.jwks())["keys"]} == new


async def test_a_logout_hint_for_another_user_ends_nothing(gateway: Gateway) -> None:
    app = await register(gateway, second_factor_required=False)
    bob = await bob_session(gateway)
    await add_user(gateway, "carol")
    carol_outcome = await sign_in(gateway, "carol")
    assert carol_outcome.session is not None
    code = await code_for(gateway, app, carol_outcome.session)
    carol_token = (await gateway.oidc.tokens.token(*exchange(app, code), BROWSER))["id_token"]

    decision = await gateway.oidc.logout.decide({"id_token_hint": carol_token}, bob, BROWSER)
    assert not decision.end_session
    assert decision.return_to is None
    own = await gateway.oidc.logout.decide(
        {"id_token_hint": carol_token}, carol_outcome.session, BROWSER
    )
    assert own.end_session


async def test_a_forged_or_foreign_logout_hint_is_refused(gateway: Gateway) -> None:
    app = await register(gateway, second_factor_required=False)
    session = await bob_session(gateway)
    code = await code_for(gateway, app, session)
    token = (await gateway.oidc.tokens.token(*exchange(app, code), BROWSER))["id_token"]
    header, payload, signature = token.split(".")

    for hint in ("", "not.a.jwt", f"{header}.{payload}.{signature[:-4]}AAAA"):
        with pytest.raises(LogoutRefused):
            await gateway.oidc.logout.decide({"id_token_hint": hint}, session, BROWSER)
    with pytest.raises(LogoutRefused):
        await gateway.oidc.logout.decide(
            {"id_token_hint": token, "client_id": "someone-else"}, session, BROWSER
        )
