"""The admin console under /admin: Overview, Advanced Settings, Two Factor Settings, User
Management and the Audit Log, each page module with its own router."""

from __future__ import annotations

from fastapi import APIRouter

from twofa.web.admin import (
    access_pages,
    audit_pages,
    authenticator_pages,
    email_pages,
    overview,
    questions_pages,
    settings_pages,
    status_pages,
    users_pages,
)

router = APIRouter()
for module in (
    overview,
    settings_pages,
    email_pages,
    questions_pages,
    authenticator_pages,
    users_pages,
    audit_pages,
    access_pages,
    status_pages,
):
    router.include_router(module.router)
