"""The admin console under /admin: Overview, Advanced Settings, Two Factor Settings, User
Management, the Audit Log, Access Rules and Applications, each page module with its own
router. The console's router asks `require_admin` for every route it holds, so a new page
cannot forget it (a route that also names the admin as a parameter gets the same, cached
answer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from twofa.web.admin import (
    access_pages,
    applications_pages,
    audit_pages,
    authenticator_pages,
    email_pages,
    overview,
    questions_pages,
    settings_pages,
    status_pages,
    users_pages,
)
from twofa.web.admin.guard import require_admin

router = APIRouter(dependencies=[Depends(require_admin)])
for module in (
    overview,
    settings_pages,
    email_pages,
    questions_pages,
    authenticator_pages,
    users_pages,
    audit_pages,
    access_pages,
    applications_pages,
    status_pages,
):
    router.include_router(module.router)
