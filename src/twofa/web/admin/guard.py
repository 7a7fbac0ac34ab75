"""Who may use the console: a signed-in user (password and, where required, second factor)
whose account has the admin role. Anyone else gets 403, and the attempt is audited."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from twofa.errors import Forbidden
from twofa.services.state.sessions import Level, SessionView
from twofa.web.context import SignInRequired, client_of, current_session, gateway_of


class AdminOnly(Forbidden):
    """A signed-in user without the admin role reached the console."""

    @property
    def user_message(self) -> str:
        return "This page is for administrators only. The attempt was logged."


@dataclass(frozen=True)
class Admin:
    """The admin behind a console request: `username` is what the audit log records."""

    username: str
    session: SessionView


async def require_admin(request: Request) -> Admin:
    session = await current_session(request)
    if session is None or session.level is not Level.SIGNED_IN or session.user_id is None:
        raise SignInRequired(request.url.path)
    admin_name = await gateway_of(request).console_access.admin_name(
        session.user_id, client_of(request), request.url.path
    )
    if admin_name is None:
        raise AdminOnly("the console is for administrators")
    return Admin(admin_name, session)
