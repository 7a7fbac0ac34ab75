"""The one decision both sign-in protocols ask twofa (OpenID Connect's authorization endpoint,
SAML's single sign-on service): may this browser session sign in to this application now, or
must the browser sign in (again) or pass a second factor first? When it may, what twofa knows
about the user and how they signed in. A refusal (a disabled user, one the application does
not admit) is audited before it is raised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.access import AccessRule, Decision
from twofa.domain.client import ClientInfo
from twofa.errors import Forbidden, Refused
from twofa.services.idp.applications import Application
from twofa.services.idp.claims import amr_of
from twofa.services.state import audit
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.applications import SignInFacts
from twofa.storage.repositories import Users
from twofa.storage.tables import UserRow

# How far from the session's second factor the challenge that passed it was consumed.
SAME_SIGN_IN: Final = timedelta(seconds=30)


@dataclass(frozen=True)
class SignInFirst:
    """The browser must sign in; again (its session ended first) when `fresh`."""

    fresh: bool


@dataclass(frozen=True)
class SecondFactorFirst:
    """Signed in, but the application wants a second factor this session has not passed."""


@dataclass(frozen=True)
class AdmittedUser:
    """What an application may be told about the user and their sign-in."""

    user_id: int
    username: str
    display_name: str
    email: str
    groups: tuple[str, ...]
    auth_time: datetime
    amr: tuple[str, ...]
    second_factor: bool


@dataclass(frozen=True)
class SessionReady:
    """The session is enough for the application; `admit` then checks the user."""

    session: SessionView
    auth_time: datetime


@dataclass(frozen=True)
class Admitted:
    user: AdmittedUser


Admission = SignInFirst | SecondFactorFirst | Admitted


class InteractionNeeded(Refused):
    """A passive request (OIDC prompt=none, SAML IsPassive) that needs the user: `kind` says
    whether a sign-in (`login`) or a second factor (`second_factor`) is missing."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class NotAdmitted(Forbidden):
    """The user may not sign in to this application: disabled, or not one it admits."""

    def __init__(self, message: str, *, disabled: bool) -> None:
        self.disabled = disabled
        super().__init__(message)

    @property
    def user_message(self) -> str | None:
        return "Your account may not sign in to this application. Ask your administrator."


class AdmissionService:
    """`kind` names the audit records (e.g. "saml_sso", "oidc_authorize")."""

    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def decide(
        self,
        app: Application,
        session: SessionView | None,
        *,
        kind: str,
        client: ClientInfo,
        signed_in_after: datetime | None = None,
        passive: bool = False,
    ) -> Admission:
        """`next_step`, then `admit` when the session is enough."""
        step = await self.next_step(app, session, signed_in_after=signed_in_after, passive=passive)
        if not isinstance(step, SessionReady):
            return step
        return Admitted(await self.admit(app, step, kind=kind, client=client))

    async def next_step(
        self,
        app: Application,
        session: SessionView | None,
        *,
        signed_in_after: datetime | None = None,
        passive: bool = False,
    ) -> SignInFirst | SecondFactorFirst | SessionReady:
        """What the session still needs for `app`: a sign-in (again, when it is not later
        than `signed_in_after`: OIDC prompt=login passes now, max_age now - max_age, SAML
        ForceAuthn when the request was first seen), a second factor, or nothing.
        `passive` (prompt=none, IsPassive): raise `InteractionNeeded` instead of asking."""
        if session is None or session.level is not Level.SIGNED_IN or session.user_id is None:
            if passive:
                raise InteractionNeeded("login", "no signed-in session")
            return SignInFirst(fresh=False)
        async with self._db() as db:
            started_at = await SignInFacts(db).session_started_at(session.id)
        auth_time = started_at or self._clock.now()
        if signed_in_after is not None and auth_time <= signed_in_after:
            if passive:
                raise InteractionNeeded("login", "the sign-in is older than the request allows")
            return SignInFirst(fresh=True)
        if app.second_factor_required and session.second_factor_at is None:
            if passive:
                raise InteractionNeeded("second_factor", "a second factor is required")
            return SecondFactorFirst()
        return SessionReady(session, auth_time)

    async def admit(
        self, app: Application, ready: SessionReady, *, kind: str, client: ClientInfo
    ) -> AdmittedUser:
        """The user, if enabled and admitted by `app`; the decision is audited as `kind`
        ("oidc_authorize", "saml_sso", ...), a refusal before `NotAdmitted` is raised."""
        return await self._admitted(app, ready.session, ready.auth_time, kind, client)

    async def _admitted(
        self,
        app: Application,
        session: SessionView,
        auth_time: datetime,
        kind: str,
        client: ClientInfo,
    ) -> AdmittedUser:
        assert session.user_id is not None
        async with self._db.begin() as db:
            standing = await standing_of(db, app, session.user_id)
            user = standing.user
            if user is None:
                raise NotAdmitted("the session's user is gone", disabled=True)
            refusal = standing.refusal
            if refusal is None:
                amr = await _amr(db, user.id, session.second_factor_at)
            audit.record(
                db, self._clock, kind, "deny" if refusal else "allow",
                username=user.username, client=client, application=app.name,
                **({"reason": refusal} if refusal else {"amr": amr}),
            )  # fmt: skip
        if refusal is not None:  # audited (committed above), then told
            raise NotAdmitted(
                f"{user.username} may not sign in to {app.name}: {refusal}",
                disabled=refusal == "disabled",
            )
        return AdmittedUser(
            user_id=user.id,
            username=user.username,
            display_name=user.display_name or user.username,
            email=user.email,
            groups=standing.groups,
            auth_time=auth_time,
            amr=tuple(amr),
            second_factor=session.second_factor_at is not None,
        )


@dataclass(frozen=True)
class Standing:
    """A user's standing with an application now: why they may not sign in to it (None:
    they may), with what was read to decide it."""

    user: UserRow | None
    groups: tuple[str, ...]
    refusal: str | None  # "gone", "disabled", "not allowed"


async def standing_of(db: AsyncSession, app: Application, user_id: int) -> Standing:
    """The one rule of who may sign in to an application, for a new sign-in (`admit`) and for
    what goes on from an earlier one (a refresh token): an account that exists, is enabled,
    and is one the application admits (`Application.admits`)."""
    users = Users(db)
    user = await users.by_id(user_id)
    if user is None:
        return Standing(None, (), "gone")
    groups = tuple(await users.group_names(user.id))
    refusal = None
    if not user.enabled:
        refusal = "disabled"
    elif not app.admits(user.username, groups):
        refusal = "not allowed"
    return Standing(user, groups, refusal)


async def grant_refusal(
    db: AsyncSession, app: Application, user_id: int, amr: Sequence[str]
) -> str | None:
    """Why a grant made at an earlier sign-in (a code, a refresh token) may not go on now
    (None: it may): the account's standing with the application, and the second factor the
    application requires today, which the sign-in the grant rests on must have passed (an
    admin who turns the requirement on is not worked around by a password-only grant)."""
    refusal = (await standing_of(db, app, user_id)).refusal
    if refusal is None and app.second_factor_required and "mfa" not in amr:
        refusal = "no second factor"
    return refusal


@dataclass(frozen=True)
class AdmissionExplanation:
    """Why a user may or may not sign in to an application, for `twofa access explain
    --application`: the account's standing, and the rule of the application's that decided."""

    application: Application
    username: str
    refusal: str | None  # as `Standing.refusal`; None: they may
    groups: tuple[str, ...]
    decision: Decision | None  # None: the account is gone, no rule was asked
    rule: AccessRule | None


async def explain(
    db: async_sessionmaker[AsyncSession], app: Application, username: str
) -> AdmissionExplanation:
    async with db() as session:
        user = await Users(session).by_name(username)
        standing = await standing_of(session, app, user.id) if user is not None else None
    if user is None or standing is None or standing.user is None:
        return AdmissionExplanation(app, username, "gone", (), None, None)
    decision = app.decide(user.username, standing.groups)
    rule = app.access_rules[decision.rule] if decision.rule is not None else None
    return AdmissionExplanation(
        app, user.username, standing.refusal, standing.groups, decision, rule
    )


async def _amr(db: AsyncSession, user_id: int, passed: datetime | None) -> list[str]:
    """How the session signed in; the method is the one whose challenge was consumed with
    the second factor the session records."""
    method = None
    if passed is not None:
        method = await SignInFacts(db).method_consumed_near(
            user_id, passed - SAME_SIGN_IN, passed + SAME_SIGN_IN
        )
    return amr_of(passed is not None, method)
