"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): a relying party sends the
browser to the end-session endpoint with an ID token twofa issued (`id_token_hint`); twofa
ends its own session (the single sign-on every application leans on) and sends the browser
back to a `post_logout_redirect_uri` registered for that client, exactly as registered.

The hint is required: it proves the request comes from a relying party of this user, so a
page elsewhere cannot sign users out by a link. An expired hint is accepted (the spec asks
for it: a user often signs out long after signing in); its signature, issuer and audience
are not negotiable. A hint for another user than the session's ends nothing."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.errors import Invalid
from twofa.services.idp.backchannel import LOGOUT_TOKEN_TYPE
from twofa.services.idp.errors import UnsafeAuthorizeRequest
from twofa.services.idp.signing_keys import ALGORITHMS, SigningKeyService
from twofa.services.state import audit
from twofa.services.state.sessions import SessionView
from twofa.storage.applications import Applications, subject_of_user
from twofa.storage.repositories import Users


class LogoutRefused(UnsafeAuthorizeRequest, Invalid):
    """A logout request twofa cannot act on: no or a bad hint, or a return address the
    client did not register. Shown as an error page; nothing is ended, nobody redirected."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def user_message(self) -> str | None:
        return (
            "This sign-out request did not come from an application registered with this "
            "sign-in service. To sign out, use the Sign out button on this site."
        )


@dataclass(frozen=True)
class LogoutDecision:
    end_session: bool  # the browser's session is the hint's user's: end it
    return_to: str | None  # the registered post-logout URI with `state`; None: our own page


class RpLogout:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        keys: SigningKeyService,
        issuer: str,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys = keys
        self._issuer = issuer

    async def decide(
        self, query: Mapping[str, str], session: SessionView | None, client: ClientInfo
    ) -> LogoutDecision:
        hint = query.get("id_token_hint", "")
        if not hint or len(hint) > 8000:
            raise LogoutRefused("an end-session request without id_token_hint")
        try:
            token = jwt.decode(hint, await self._keys.published_keys(), list(ALGORITHMS))
        except (JoseError, ValueError) as bad:
            raise LogoutRefused(f"an end-session request with a bad id_token_hint: {bad}") from None
        claims = token.claims
        # The same keys sign back-channel logout tokens: one of those is no ID token (it
        # would let whoever saw it sign the user out of twofa by a link).
        if token.header.get("typ") == LOGOUT_TOKEN_TYPE or "events" in claims:
            raise LogoutRefused("an id_token_hint that is a logout token, not an ID token")
        audience = claims.get("aud")
        if claims.get("iss") != self._issuer or not isinstance(audience, str):
            raise LogoutRefused("an id_token_hint this gateway did not issue")
        if query.get("client_id", audience) != audience:
            raise LogoutRefused("client_id is not the id_token_hint's audience")
        async with self._db.begin() as db:
            app = await Applications(db).by_client_id(audience)
            if app is None:
                raise LogoutRefused(f"an id_token_hint for unknown client {audience!r}")
            uri = query.get("post_logout_redirect_uri")
            if uri is not None and uri not in app.post_logout_redirect_uris:
                raise LogoutRefused(f"{uri!r} is not a registered post-logout URI of {app.name}")
            user = None
            user_id = session.user_id if session is not None else None
            if user_id is not None and await subject_of_user(db, user_id) == claims.get("sub"):
                user = await Users(db).by_id(user_id)
            audit.record(
                db, self._clock, "oidc_logout", "ended" if user else "nothing_to_end",
                username=user.username if user else "", client=client, application=app.name,
            )  # fmt: skip
        return_to = None
        if uri is not None:
            parts = urllib.parse.urlsplit(uri)
            state = query.get("state")
            extra = urllib.parse.urlencode({"state": state}) if state is not None else ""
            joined = "&".join(q for q in (parts.query, extra) if q)
            return_to = urllib.parse.urlunsplit(parts._replace(query=joined))
        return LogoutDecision(end_session=user is not None, return_to=return_to)
