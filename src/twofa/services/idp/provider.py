"""The OpenID Connect authorization code flow (OIDC Core §3.1, with PKCE, RFC 7636): the
authorization endpoint decides whether the browser's twofa session is enough for the client
and issues a code, valid 60 s and bound to the client, the redirect URI and the PKCE
challenge. The token endpoint and userinfo are `tokens` (services.idp.tokens)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.services.idp.admission import (
    AdmissionService,
    InteractionNeeded,
    NotAdmitted,
    SecondFactorFirst,
    SessionReady,
    SignInFirst,
)
from twofa.services.idp.applications import Application, application_of
from twofa.services.idp.claims import CLAIMS, SCOPES
from twofa.services.idp.consent import ConsentService, consent_scopes, plain_words
from twofa.services.idp.errors import (
    OAuthError,
    UnknownClient,
    UnregisteredRedirect,
)
from twofa.services.idp.logout import RpLogout
from twofa.services.idp.signing_keys import SIGNING_ALGORITHM, SigningKeyService
from twofa.services.idp.tokens import TokenEndpoint
from twofa.services.state.sessions import SessionView
from twofa.storage.applications import Applications, OidcCodes
from twofa.storage.oidc_refresh_tokens import session_locked
from twofa.storage.oidc_tables import OidcCodeRow

CODE_LIFETIME: Final = timedelta(seconds=60)
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
class ConsentFirst:
    """Signed in as the client needs, but the user has not allowed this application (not
    marked trusted) to receive what it asks for, or it asked again with prompt=consent."""

    application: str
    scopes: tuple[str, ...]  # the known scopes asked for (services.idp.consent)

    @property
    def shares(self) -> tuple[str, ...]:
        """What the application will receive, in plain words."""
        return plain_words(self.scopes)


AuthorizeOutcome = RedirectToClient | SignInFirst | SecondFactorFirst | ConsentFirst


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
        self._admission = AdmissionService(db, clock)

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
            "prompt_values_supported": ["none", "login", "consent"],
            "acr_values_supported": ["urn:twofa:acr:mfa", "urn:twofa:acr:pwd"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
            # OpenID Connect Back-Channel Logout 1.0 §2.1: ID tokens carry `sid`, and an
            # application with a back-channel logout URI is told when that session ends.
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }

    async def authorize(
        self, request: AuthorizeRequest, session: SessionView | None, client: ClientInfo
    ) -> AuthorizeOutcome:
        """What the authorization endpoint answers. An unknown client or a redirect URI it
        did not register raises (an error page: the URI cannot be trusted); every other
        problem goes back to the client's redirect URI (RFC 6749 §4.1.2.1)."""
        app = await self._registered(request)
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

    async def _registered(self, request: AuthorizeRequest) -> Application:
        """The client, when the redirect URI is one it registered; else raises (an error page:
        the URI cannot be trusted). Every answer about an authorization request starts here."""
        async with self._db() as db:
            row = await Applications(db).by_client_id(request.client_id)
        if row is None:
            raise UnknownClient(f"authorization request for unknown client {request.client_id!r}")
        if request.redirect_uri not in row.redirect_uris:
            raise UnregisteredRedirect(f"{request.redirect_uri!r} is not registered for {row.name}")
        return application_of(row)

    @cached_property
    def consents(self) -> ConsentService:
        return ConsentService(self._db, self._clock)

    async def consent_asked(
        self, request: AuthorizeRequest, session: SessionView | None
    ) -> ConsentFirst | None:
        """What the consent page asks, when the request (checked as authorize checks it)
        waits for the user's consent and nothing else; None: authorize answers it."""
        return await self._consent_step(await self._registered(request), request, session)

    async def answer_consent(
        self,
        request: AuthorizeRequest,
        session: SessionView | None,
        client: ClientInfo,
        allowed: bool,
    ) -> RedirectToClient | None:
        """The user's Allow or Deny, counted only while the request waits for consent. Deny
        goes back to the client with access_denied; None: back to authorize, which issues the
        code after Allow or asks for whatever is missing."""
        app = await self._registered(request)
        step = await self._consent_step(app, request, session)
        if step is None or session is None or session.user_id is None:
            return None
        if allowed:
            await self.consents.grant(session.user_id, app.id, step.scopes, client)
            return None
        await self.consents.refuse(session.user_id, app.id, step.scopes, client)
        return self._error(request, "access_denied", "the user did not allow the application")

    async def _consent_step(
        self, app: Application, request: AuthorizeRequest, session: SessionView | None
    ) -> ConsentFirst | None:
        try:
            step = await self._next_step(app, request, session)
        except OAuthError:
            return None  # authorize sends it back to the client
        return step if isinstance(step, ConsentFirst) else None

    async def _decide(
        self,
        app: Application,
        request: AuthorizeRequest,
        session: SessionView | None,
        client: ClientInfo,
    ) -> AuthorizeOutcome:
        step = await self._next_step(app, request, session)
        if not isinstance(step, SessionReady):
            return step
        return RedirectToClient(await self._issue_code(app, request, step, client))

    async def _next_step(
        self, app: Application, request: AuthorizeRequest, session: SessionView | None
    ) -> SessionReady | SignInFirst | SecondFactorFirst | ConsentFirst:
        """What the request waits for, in order: a sign-in, a second factor (the one decision
        both protocols share, services.idp.admission), consent. Raises the OAuthError to send
        back to the client instead (prompt=none among them)."""
        prompts, max_age = _checked_request(app, request)
        now = self._clock.now()
        signed_in_after = None
        if "login" in prompts:
            signed_in_after = now
        elif max_age is not None:
            signed_in_after = now - timedelta(seconds=max_age)
        try:
            step = await self._admission.next_step(
                app, session, signed_in_after=signed_in_after, passive="none" in prompts
            )
        except InteractionNeeded as needed:
            error = "login_required" if needed.kind == "login" else "interaction_required"
            raise OAuthError(error, str(needed)) from None
        if not isinstance(step, SessionReady) or app.skip_consent:
            return step
        user_id = step.session.user_id
        assert user_id is not None
        scopes = consent_scopes(request.scope.split())
        forced = "consent" in prompts
        if forced or not await self.consents.has_consent(user_id, app.id, scopes):
            if "none" in prompts:
                raise OAuthError("consent_required", "the user has not allowed this client")
            return ConsentFirst(app.name, scopes)
        return step

    async def _issue_code(
        self, app: Application, request: AuthorizeRequest, ready: SessionReady, client: ClientInfo
    ) -> str:
        try:
            user = await self._admission.admit(app, ready, kind="oidc_authorize", client=client)
        except NotAdmitted:  # audited by the admission
            raise OAuthError("access_denied", "this account may not use this application") from None
        now = self._clock.now()
        code = new_token()
        session_id = ready.session.id
        async with self._db.begin() as db:
            OidcCodes(db).add(
                OidcCodeRow(
                    code_hash=token_digest(code),
                    application_id=app.id,
                    user_id=user.user_id,
                    redirect_uri=request.redirect_uri,
                    scope=" ".join(s for s in request.scope.split() if s in SCOPES),
                    nonce=request.nonce,
                    code_challenge=request.code_challenge,
                    code_challenge_method=request.code_challenge_method,
                    auth_time=ready.auth_time,
                    amr=list(user.amr),
                    created_at=now,
                    expires_at=now + CODE_LIFETIME,
                    session_id=session_id,  # its grants end, and the app is told, with it
                )
            )
            try:  # then lock the session: it cannot end unseen by this code
                await db.flush()
            except IntegrityError:  # the user was deleted meanwhile (its row held until then)
                raise OAuthError("login_required", "the session has ended") from None
            if not await session_locked(db, session_id):
                raise OAuthError("login_required", "the session has ended")
            await OidcCodes(db).remove_superseded(session_id, app.id, now - CODE_LIFETIME)
            await OidcCodes(db).remove_expired(now - CODE_LIFETIME)
        values = {"code": code, "state": request.state, "iss": self.issuer}
        return _with_query(request.redirect_uri, values)


def _checked_request(app: Application, request: AuthorizeRequest) -> tuple[set[str], int | None]:
    """The request's prompt values and max_age, once the request is one twofa answers."""
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
    return prompts, _max_age(request.max_age)


def _max_age(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 9:
        raise OAuthError("invalid_request", "max_age must be a number of seconds")
    return int(value)
