"""Refresh tokens (RFC 6749 §6, OIDC Core §12) with rotation and reuse detection, and their
revocation (RFC 7009 §2); the token endpoint (services.idp.tokens) calls these inside its
transactions.

Who gets one: every confidential client, with each code exchange, whatever the scope; a
public client never does. Relying parties such as mod_auth_openidc
(`OIDCRefreshAccessTokenBeforeExpiry`) and oauth2-proxy (`--cookie-refresh`) refresh whenever
a refresh token came back and do not ask for `offline_access`, so asking for it would leave
them without one; and twofa does not offer offline access (OIDC Core §11): a family lives
`REFRESH_FAMILY_LIFETIME` from the code exchange, absolute, about a working day, and each use
is checked against the account and the application as a new sign-in would be. A public
client's refresh token would be a bearer secret held in a browser or a device with nothing
to bind it to, so it goes back to the authorization endpoint instead.

Each use rotates: the token is marked used by one conditional UPDATE and a successor of the
same family is issued. Presenting a used token again means two holders (RFC 9700 §4.14.2):
the whole family and the access tokens issued with it are revoked, which also ends the
legitimate holder's chain; that, and a re-sign-in, is the price of telling theft apart."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.services.idp.admission import grant_refusal
from twofa.services.idp.applications import application_of
from twofa.services.idp.errors import OAuthError
from twofa.services.state import audit
from twofa.storage.oidc_refresh_tokens import OidcRefreshTokens, revoke_access_token
from twofa.storage.oidc_tables import OidcRefreshTokenRow
from twofa.storage.tables import ApplicationRow

REFRESH_FAMILY_LIFETIME: Final = timedelta(hours=8)
TOKEN_TYPES: Final = ("refresh_token", "access_token")  # RFC 7009 §2.1 token_type_hint


@dataclass(frozen=True)
class Grant:
    """What a set of tokens is issued for: whom, which scopes, and the sign-in they rest on
    (kept from the original sign-in across refreshes; a nonce only with a code)."""

    user_id: int
    scope: str
    auth_time: datetime
    amr: tuple[str, ...]
    nonce: str | None = None
    # The twofa session that signed in (sessions.id): the grant ends with it, and the ID
    # token names it by `sid` (claims.session_sid). None for grants made before this was kept.
    session_id: str | None = None


@dataclass(frozen=True)
class Rotation:
    """A refresh: the grant and the successor token, or why there is none (`problem`)."""

    grant: Grant | None = None
    refresh_token: str | None = None
    problem: str | None = None


def issues_refresh_tokens(app: ApplicationRow) -> bool:
    return not app.public


def narrowed_scope(granted: str, asked: str | None) -> str:
    """The scope of a refresh: the granted one, or fewer of its scopes (RFC 6749 §6), in
    the granted order."""
    if asked is None or not asked.strip():
        return granted
    wanted = set(asked.split())
    if not wanted <= set(granted.split()):
        raise OAuthError("invalid_scope", "a refresh may narrow the granted scope, not widen it")
    return " ".join(s for s in granted.split() if s in wanted)


def start_family(
    db: AsyncSession, app: ApplicationRow, grant: Grant, jti: str, now: datetime
) -> str:
    """The first refresh token of a new family, issued with the access token `jti`."""
    token = new_token()
    OidcRefreshTokens(db).add(_refresh_row(token, secrets.token_hex(16), app, grant, jti, now))
    return token


async def rotate(
    db: AsyncSession,
    clock: Clock,
    app: ApplicationRow,
    presented: str,
    asked_scope: str | None,
    jti: str,
    client: ClientInfo,
) -> Rotation:
    """Uses the client's token once and issues its successor, issued with the access token
    `jti`; a used token revokes its family. Raises invalid_scope (rolling the use back)."""
    now = clock.now()
    tokens = OidcRefreshTokens(db)
    await tokens.lock_grant_owner(token_digest(presented), app.id)  # before its use: see there
    use = await tokens.use(token_digest(presented), app.id, now)
    row = use.token
    if row is None:
        return Rotation(problem="unknown refresh token")
    if not use.won:
        if row.used_at is None:
            expired = row.expires_at <= now
            return Rotation(
                problem="the refresh token has " + ("expired" if expired else "been revoked")
            )
        await tokens.revoke_family(row.family_id, now)
        _audit(db, clock, "reused", app, row, client)
        return Rotation(problem="the refresh token was used already")
    if await grant_refusal(db, application_of(app), row.user_id, row.amr) is not None:
        await tokens.revoke_family(row.family_id, now)
        _audit(db, clock, "refused", app, row, client, reason="account may not sign in")
        return Rotation(problem="the account may no longer sign in to this application")
    grant = Grant(row.user_id, row.scope, row.auth_time, tuple(row.amr), None, row.session_id)
    successor = new_token()
    # The successor keeps the granted scope (RFC 6749 §6); only this refresh is narrowed.
    tokens.add(_refresh_row(successor, row.family_id, app, grant, jti, now, row.expires_at))
    narrowed = Grant(
        grant.user_id,
        narrowed_scope(row.scope, asked_scope),
        grant.auth_time,
        grant.amr,
        session_id=grant.session_id,
    )
    return Rotation(grant=narrowed, refresh_token=successor)


async def revoke(
    db: AsyncSession,
    clock: Clock,
    app: ApplicationRow,
    presented: str,
    hint: str | None,
    client: ClientInfo,
) -> None:
    """Revokes the client's token, a refresh token with its whole family (RFC 7009 §2.1).
    Another client's token, an unknown one, or one revoked already is left as it is."""
    if hint not in (None, "", *TOKEN_TYPES):
        raise OAuthError("unsupported_token_type", "only refresh_token and access_token")
    now = clock.now()
    digest = token_digest(presented)
    kinds = reversed(TOKEN_TYPES) if hint == "access_token" else iter(TOKEN_TYPES)
    for kind in kinds:  # the hint only says where to look first (§2.1)
        if kind == "access_token":
            if await revoke_access_token(db, digest, app.id, now):
                audit.record(
                    db, clock, "oidc_access_token", "revoked", client=client, application=app.name
                )
                return
            continue
        row = await OidcRefreshTokens(db).of_client(digest, app.id)
        if row is not None:
            if row.revoked_at is None:
                await OidcRefreshTokens(db).revoke_family(row.family_id, now)
                _audit(db, clock, "revoked", app, row, client)
            return


def _refresh_row(
    token: str,
    family_id: str,
    app: ApplicationRow,
    grant: Grant,
    jti: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> OidcRefreshTokenRow:
    return OidcRefreshTokenRow(
        token_hash=token_digest(token),
        family_id=family_id,
        application_id=app.id,
        user_id=grant.user_id,
        scope=grant.scope,
        auth_time=grant.auth_time,
        amr=list(grant.amr),
        issued_jti=jti,
        created_at=now,
        expires_at=expires_at or now + REFRESH_FAMILY_LIFETIME,
        session_id=grant.session_id,
    )


def _audit(
    db: AsyncSession,
    clock: Clock,
    outcome: str,
    app: ApplicationRow,
    row: OidcRefreshTokenRow,
    client: ClientInfo,
    **detail: str,
) -> None:
    audit.record(
        db, clock, "oidc_refresh_token", outcome, client=client, application=app.name,
        user_id=row.user_id, family=row.family_id, **detail,
    )  # fmt: skip
