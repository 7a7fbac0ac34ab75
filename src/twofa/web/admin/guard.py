"""Who may use the console: a signed-in user whose account has the admin role, with a second
factor behind the session, and one passed in the last ten minutes for a change (the gate's
`may_use_console`). Every console route passes through `require_admin`: the console's router
asks it for all of them. A non-admin gets 403, and the attempt is audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request

from twofa.errors import Forbidden
from twofa.services.state.sessions import Level, SessionView
from twofa.web.context import SignInRequired, client_of, current_session, gateway_of

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


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
    changing = request.method not in SAFE_METHODS
    gateway_of(request).gate.may_use_console(session, changing=changing)
    return Admin(admin_name, session)


SignedInAdmin = Annotated[Admin, Depends(require_admin)]
