"""Who may use the console: a signed-in user (password and, where required, second factor)
whose account has the admin role. Anyone else gets 403, and the attempt is audited."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from twofa.errors import TwofaError
from twofa.services.state import audit
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.repositories import Users
from twofa.web.context import SignInRequired, client_of, current_session, gateway_of


class AdminOnly(TwofaError):
    """A signed-in user without the admin role reached the console."""


@dataclass(frozen=True)
class Admin:
    """The admin behind a console request: `username` is what the audit log records."""

    username: str
    session: SessionView


async def require_admin(request: Request) -> Admin:
    session = await current_session(request)
    if session is None or session.level is not Level.SIGNED_IN or session.user_id is None:
        raise SignInRequired(request.url.path)
    gateway = gateway_of(request)
    async with gateway.db.begin() as db:
        user = await Users(db).by_id(session.user_id)
        if user is not None and user.is_admin and user.enabled:
            return Admin(user.username, session)
        audit.record(
            db,
            gateway.clock,
            "admin_denied",
            "forbidden",
            username=user.username if user else "",
            client=client_of(request),
            path=request.url.path,
        )
    raise AdminOnly("the console is for administrators")
