"""The token endpoint, revocation and userinfo (OIDC Core §3.1.3, §5.3; RFC 7009): a client
authenticates (client_secret_basic, client_secret_post, or a public client's PKCE verifier
alone), redeems its code once by a conditional UPDATE, and gets an access token and an ID
token signed by the key in use, and a confidential client a refresh token too (rotated on each
use, services.idp.refresh). A second redemption of a code is refused and revokes what the
first one issued (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from joserfc import jwt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.services.idp.admission import grant_refusal, standing_of
from twofa.services.idp.applications import application_of, verify_secret
from twofa.services.idp.claims import UserFacts, acr_of, s256, session_sid, user_claims
from twofa.services.idp.errors import InvalidClient, InvalidGrant, InvalidToken, OAuthError
from twofa.services.idp.refresh import Grant, issues_refresh_tokens, revoke, rotate, start_family
from twofa.services.idp.signing_keys import SIGNING_ALGORITHM, SigningKeyService
from twofa.services.state import audit
from twofa.storage.applications import Applications, OidcAccessTokens, OidcCodes, OidcSubjects
from twofa.storage.oidc_refresh_tokens import OidcRefreshTokens
from twofa.storage.oidc_tables import OidcAccessTokenRow, OidcCodeRow
from twofa.storage.repositories import Users
from twofa.storage.tables import ApplicationRow

ACCESS_TOKEN_LIFETIME: Final = timedelta(minutes=10)
ID_TOKEN_LIFETIME: Final = timedelta(minutes=10)
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1


class TokenEndpoint:
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
        self.issuer = issuer

    async def authenticate_client(
        self, form: Mapping[str, str], basic: tuple[str, str] | None
    ) -> ApplicationRow:
        """client_secret_basic, client_secret_post, or a public client's bare client_id."""
        other_id = form.get("client_id")
        if basic is not None and ("client_secret" in form or other_id not in (None, basic[0])):
            raise OAuthError("invalid_request", "one client authentication method only")
        if basic is not None:
            client_id, secret = basic[0], basic[1] or None
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        async with self._db() as db:
            row = await Applications(db).by_client_id(client_id)
        if row is None:
            raise InvalidClient()
        if row.public:
            if secret:
                raise InvalidClient("a public client has no secret")
            return row
        if not secret or not verify_secret(row, secret):
            raise InvalidClient()
        return row

    async def token(
        self, form: Mapping[str, str], basic: tuple[str, str] | None, client: ClientInfo
    ) -> dict[str, Any]:
        """The token endpoint's answer (RFC 6749 §5.1) for an authorization code or a
        refresh token."""
        app = await self.authenticate_client(form, basic)
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            return await self._refresh(app, form, client)
        if grant_type != "authorization_code":
            raise OAuthError("unsupported_grant_type", "authorization_code or refresh_token")
        code = form.get("code", "")
        if not code or len(code) > 100:
            raise InvalidGrant("no code")
        now = self._clock.now()
        access_token, jti = new_token(), secrets.token_hex(16)
        refresh_token = None
        async with self._db.begin() as db:
            redemption = await OidcCodes(db).redeem(token_digest(code), jti, now)
            row = redemption.code
            problem = _redemption_problem(row, redemption.won, app, form, now)
            if row is not None and not redemption.won and row.application_id == app.id:
                await self._revoke_issued(db, row, now)
                audit.record(
                    db, self._clock, "oidc_code", "replayed", client=client,
                    application=app.name, user_id=row.user_id,
                )  # fmt: skip
            if problem is None:
                assert row is not None
                app_now = application_of(app)  # as the admin left it since the code
                if await grant_refusal(db, app_now, row.user_id, row.amr) is not None:
                    problem = "the account may not sign in to this application"
                else:  # in the redeeming transaction: a replay finds the tokens to revoke
                    grant = _grant_of(row)
                    facts = await self._facts(db, row.user_id)
                    self._add_access_token(db, access_token, jti, app, grant, now)
                    await OidcAccessTokens(db).remove_expired(now)
                    if issues_refresh_tokens(app):
                        refresh_token = start_family(db, app, grant, jti, now)
                        await OidcRefreshTokens(db).remove_expired(now)
        if problem is not None:
            raise InvalidGrant(problem)
        return await self._answer(app, grant, facts, access_token, refresh_token, now)

    async def _refresh(
        self, app: ApplicationRow, form: Mapping[str, str], client: ClientInfo
    ) -> dict[str, Any]:
        """grant_type=refresh_token (RFC 6749 §6, OIDC Core §12.2): rotated, see
        services.idp.refresh."""
        presented = form.get("refresh_token", "")
        if not presented:
            raise OAuthError("invalid_request", "no refresh_token")
        if len(presented) > 100:
            raise InvalidGrant("unknown refresh token")
        access_token, jti = new_token(), secrets.token_hex(16)
        async with self._db.begin() as db:
            rotation = await rotate(db, self._clock, app, presented, form.get("scope"), jti, client)
            if rotation.grant is not None:
                facts = await self._facts(db, rotation.grant.user_id)
                now = self._clock.now()
                self._add_access_token(db, access_token, jti, app, rotation.grant, now)
        if rotation.grant is None:  # a reuse's revocation is committed, then told
            raise InvalidGrant(rotation.problem or "refused")
        return await self._answer(
            app, rotation.grant, facts, access_token, rotation.refresh_token, now
        )

    async def revoke(
        self, form: Mapping[str, str], basic: tuple[str, str] | None, client: ClientInfo
    ) -> dict[str, Any]:
        """The revocation endpoint (RFC 7009 §2): the same answer for a token revoked, one
        unknown, and another client's, which is left alone."""
        app = await self.authenticate_client(form, basic)
        presented = form.get("token", "")
        if not presented:
            raise OAuthError("invalid_request", "no token")
        hint = form.get("token_type_hint")
        async with self._db.begin() as db:
            await revoke(db, self._clock, app, presented, hint, client)
        return {}

    async def _revoke_issued(self, db: AsyncSession, code: OidcCodeRow, now: datetime) -> None:
        """What the first redemption of a replayed code issued: its access token and the
        refresh token family started with it, with every rotation since."""
        if code.issued_jti is None:
            return
        await OidcAccessTokens(db).revoke_jti(code.issued_jti, now)
        family = await OidcRefreshTokens(db).family_of_jti(code.issued_jti)
        if family is not None:
            await OidcRefreshTokens(db).revoke_family(family, now)

    async def _answer(
        self,
        app: ApplicationRow,
        grant: Grant,
        facts: UserFacts,
        access_token: str,
        refresh_token: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        answer = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "scope": grant.scope,
        }
        if "openid" in grant.scope.split():
            answer["id_token"] = await self._id_token(app, grant, facts, now)
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
        return answer

    @staticmethod
    def _add_access_token(
        db: AsyncSession,
        token: str,
        jti: str,
        app: ApplicationRow,
        grant: Grant,
        now: datetime,
    ) -> None:
        OidcAccessTokens(db).add(
            OidcAccessTokenRow(
                token_hash=token_digest(token),
                jti=jti,
                application_id=app.id,
                user_id=grant.user_id,
                scope=grant.scope,
                created_at=now,
                expires_at=now + ACCESS_TOKEN_LIFETIME,
            )
        )

    async def _facts(self, db: AsyncSession, user_id: int) -> UserFacts:
        users = Users(db)
        user = await users.by_id(user_id)
        assert user is not None
        subject = await OidcSubjects(db).subject_of(user_id, new_token(), self._clock.now())
        groups = tuple(sorted(await users.group_names(user_id)))
        return UserFacts(subject, user.username, user.display_name, user.email, groups)

    async def _id_token(
        self, app: ApplicationRow, grant: Grant, facts: UserFacts, now: datetime
    ) -> str:
        claims = user_claims(facts, grant.scope.split())
        claims.update(
            iss=self.issuer,
            aud=app.client_id,
            azp=app.client_id,
            iat=int(now.timestamp()),
            exp=int((now + ID_TOKEN_LIFETIME).timestamp()),
            auth_time=int(grant.auth_time.timestamp()),
            amr=list(grant.amr),
            acr=acr_of(grant.amr),
        )
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        if grant.session_id is not None:  # what a back-channel logout token will name
            claims["sid"] = session_sid(grant.session_id)
        key = await self._keys.signing_key()
        header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key)

    async def userinfo(self, bearer: str) -> dict[str, Any]:
        """The claims for an access token (OIDC Core §5.3), by the scopes it was issued for."""
        now = self._clock.now()
        async with self._db.begin() as db:
            row = await OidcAccessTokens(db).by_hash(token_digest(bearer))
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                raise InvalidToken()
            app = await db.get(ApplicationRow, row.application_id)
            # The one rule a new sign-in is held to: a user disabled, or one the application
            # no longer admits, is told nothing more about themselves to it.
            if app is None or (await standing_of(db, application_of(app), row.user_id)).refusal:
                raise InvalidToken("the account may not sign in to this application")
            facts = await self._facts(db, row.user_id)
            return user_claims(facts, row.scope.split())


def _grant_of(code: OidcCodeRow) -> Grant:
    return Grant(
        code.user_id, code.scope, code.auth_time, tuple(code.amr), code.nonce, code.session_id
    )


def _redemption_problem(
    row: OidcCodeRow | None,
    won: bool,
    app: ApplicationRow,
    form: Mapping[str, str],
    now: datetime,
) -> str | None:
    """Why a redeemed code gives no tokens, or None when it does."""
    if row is None:
        return "unknown code"
    if not won:
        return "the code was used already"
    if row.application_id != app.id:
        return "the code was issued to another client"
    if row.expires_at <= now:
        return "the code has expired"
    if form.get("redirect_uri") != row.redirect_uri:
        return "redirect_uri does not match the authorization request"
    verifier = form.get("code_verifier")
    if row.code_challenge is None:
        return None if verifier is None else "no code_challenge was sent for this code"
    if verifier is None or not _VERIFIER.match(verifier) or s256(verifier) != row.code_challenge:
        return "code_verifier does not match the code_challenge"
    return None
