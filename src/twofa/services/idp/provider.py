"""The OpenID Connect authorization code flow (OIDC Core §3.1, with PKCE, RFC 7636): the
authorization endpoint decides whether the browser's twofa session is enough for the client
and issues a code, valid 60 s and bound to the client, the redirect URI and the PKCE
challenge. The token endpoint and userinfo are `tokens` (services.idp.tokens)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.services.idp.applications import Application, application_of
from twofa.services.idp.claims import (
    CLAIMS,
    SCOPES,
    amr_of,
)
from twofa.services.idp.errors import (
    OAuthError,
    UnknownClient,
    UnregisteredRedirect,
)
from twofa.services.idp.logout import RpLogout
from twofa.services.idp.signing_keys import SIGNING_ALGORITHM, SigningKeyService
from twofa.services.idp.tokens import TokenEndpoint
from twofa.services.state import audit
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.applications import (
    Applications,
    OidcCodes,
    SignInFacts,
)
from twofa.storage.repositories import Users
from twofa.storage.tables import OidcCodeRow

CODE_LIFETIME: Final = timedelta(seconds=60)
# How far from the session's second factor the challenge that passed it was consumed.
_SAME_SIGN_IN: Final = timedelta(seconds=30)
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # a base64url SHA-256


@dataclass(frozen=True)
class AuthorizeRequest:
    """The query of an authorization request, as the relying party sent it."""

    client_id: str
    redirect_uri: str
    response_type: str = ""
    scope: str = ""
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    prompt: str = ""
    max_age: str | None = None

    @classmethod
    def of(cls, query: Mapping[str, str]) -> AuthorizeRequest:
        return cls(
            client_id=query.get("client_id", ""),
            redirect_uri=query.get("redirect_uri", ""),
            response_type=query.get("response_type", ""),
            scope=query.get("scope", ""),
            state=query.get("state"),
            nonce=query.get("nonce"),
            code_challenge=query.get("code_challenge"),
            code_challenge_method=query.get("code_challenge_method"),
            prompt=query.get("prompt", ""),
            max_age=query.get("max_age"),
        )


@dataclass(frozen=True)
class RedirectToClient:
    """Back to the relying party, with a code or an error."""

    url: str


@dataclass(frozen=True)
class SignInFirst:
    """The browser must sign in (again, when `fresh`: prompt=login or max_age passed)."""

    fresh: bool


@dataclass(frozen=True)
class SecondFactorFirst:
    """Signed in, but the client wants a second factor this session has not passed."""


AuthorizeOutcome = RedirectToClient | SignInFirst | SecondFactorFirst


def _with_query(uri: str, values: Mapping[str, str | None]) -> str:
    parts = urllib.parse.urlsplit(uri)
    extra = urllib.parse.urlencode({k: v for k, v in values.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


class OidcProvider:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        keys: SigningKeyService,
        issuer: str,
    ) -> None:
        self._db = db
        self._clock = clock
        self.issuer = issuer.rstrip("/")
        self.tokens = TokenEndpoint(db, clock, keys, self.issuer)
        self.logout = RpLogout(db, clock, keys, self.issuer)

    def discovery(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 §3, every endpoint under the issuer."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oidc/authorize",
            "token_endpoint": f"{base}/oidc/token",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "jwks_uri": f"{base}/oidc/jwks",
            "end_session_endpoint": f"{base}/oidc/logout",
            "revocation_endpoint": f"{base}/oidc/revoke",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
            "scopes_supported": list(SCOPES),
            "claims_supported": list(CLAIMS),
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login"],
            "acr_values_supported": ["urn:twofa:acr:mfa", "urn:twofa:acr:pwd"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
        }

    async def authorize(
        self, request: AuthorizeRequest, session: SessionView | None, client: ClientInfo
    ) -> AuthorizeOutcome:
        """What the authorization endpoint answers. An unknown client or a redirect URI it
        did not register raises (an error page: the URI cannot be trusted); every other
        problem goes back to the client's redirect URI (RFC 6749 §4.1.2.1)."""
        async with self._db() as db:
            row = await Applications(db).by_client_id(request.client_id)
        if row is None:
            raise UnknownClient(f"authorization request for unknown client {request.client_id!r}")
        if request.redirect_uri not in row.redirect_uris:
            raise UnregisteredRedirect(f"{request.redirect_uri!r} is not registered for {row.name}")
        app = application_of(row)
        try:
            return await self._decide(app, request, session, client)
        except OAuthError as refused:
            return self._error(request, refused.code, refused.description)

    def _error(self, request: AuthorizeRequest, code: str, description: str) -> RedirectToClient:
        values = {
            "error": code,
            "error_description": description,
            "state": request.state,
            "iss": self.issuer,
        }
        return RedirectToClient(_with_query(request.redirect_uri, values))

    async def _decide(
        self,
        app: Application,
        request: AuthorizeRequest,
        session: SessionView | None,
        client: ClientInfo,
    ) -> AuthorizeOutcome:
        scopes = request.scope.split()
        if request.response_type != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code")
        if "openid" not in scopes:
            raise OAuthError("invalid_scope", "the openid scope is required")
        if request.code_challenge_method not in (None, "S256"):
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        if request.code_challenge is not None and not _CHALLENGE.match(request.code_challenge):
            raise OAuthError("invalid_request", "code_challenge is not an S256 challenge")
        if app.public and (request.code_challenge is None or request.code_challenge_method is None):
            raise OAuthError("invalid_request", "a public client must use PKCE with S256")
        prompts = set(request.prompt.split())
        if "none" in prompts and len(prompts) > 1:
            raise OAuthError("invalid_request", "prompt=none cannot be combined")
        max_age = _max_age(request.max_age)
        signed_in = session is not None and session.level is Level.SIGNED_IN
        if session is None or not signed_in or session.user_id is None:
            if "none" in prompts:
                raise OAuthError("login_required", "no signed-in session")
            return SignInFirst(fresh=False)
        async with self._db() as db:
            started_at = await SignInFacts(db).session_started_at(session.id)
        now = self._clock.now()
        auth_time = started_at or now
        too_old = max_age is not None and now - auth_time > timedelta(seconds=max_age)
        if "login" in prompts or too_old:
            if "none" in prompts:
                raise OAuthError("login_required", "the sign-in is older than max_age")
            return SignInFirst(fresh=True)
        if app.second_factor_required and session.second_factor_at is None:
            if "none" in prompts:
                raise OAuthError("interaction_required", "a second factor is required")
            return SecondFactorFirst()
        return RedirectToClient(await self._issue_code(app, request, session, auth_time, client))

    async def _issue_code(
        self,
        app: Application,
        request: AuthorizeRequest,
        session: SessionView,
        auth_time: datetime,
        client: ClientInfo,
    ) -> str:
        assert session.user_id is not None
        now = self._clock.now()
        code = new_token()
        async with self._db.begin() as db:
            user = await Users(db).by_id(session.user_id)
            if user is None or not user.enabled:
                raise OAuthError("access_denied", "the account cannot sign in")
            admitted = app.admits(user.username, await Users(db).group_names(user.id))
            if admitted:
                amr = await self._amr(db, user.id, session.second_factor_at)
                OidcCodes(db).add(
                    OidcCodeRow(
                        code_hash=token_digest(code),
                        application_id=app.id,
                        user_id=user.id,
                        redirect_uri=request.redirect_uri,
                        scope=" ".join(s for s in request.scope.split() if s in SCOPES),
                        nonce=request.nonce,
                        code_challenge=request.code_challenge,
                        code_challenge_method=request.code_challenge_method,
                        auth_time=auth_time,
                        amr=amr,
                        created_at=now,
                        expires_at=now + CODE_LIFETIME,
                    )
                )
                await OidcCodes(db).remove_expired(now - CODE_LIFETIME)
            audit.record(
                db, self._clock, "oidc_authorize", "allow" if admitted else "deny",
                username=user.username, client=client, application=app.name,
                **({"amr": amr} if admitted else {"reason": "not allowed"}),
            )  # fmt: skip
        if not admitted:  # the refusal is audited (committed above), then told
            raise OAuthError("access_denied", "this account may not use this application")
        values = {"code": code, "state": request.state, "iss": self.issuer}
        return _with_query(request.redirect_uri, values)

    async def _amr(self, db: AsyncSession, user_id: int, passed: datetime | None) -> list[str]:
        """How the session signed in; the method is the one whose challenge was consumed
        with the second factor the session records."""
        method = None
        if passed is not None:
            method = await SignInFacts(db).method_consumed_near(
                user_id, passed - _SAME_SIGN_IN, passed + _SAME_SIGN_IN
            )
        return amr_of(passed is not None, method)


def _max_age(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 9:
        raise OAuthError("invalid_request", "max_age must be a number of seconds")
    return int(value)
