"""The console's Applications page: the OpenID Connect clients users sign in to through twofa,
with add, edit, rotate secret and remove (after a confirmation). A new or rotated secret is
shown on the answer to that POST and nowhere else: it is kept only as a hash. Handlers read
forms and render; the registry and its audit records live in `ApplicationService`."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from twofa.services.idp.applications import (
    Application,
    ApplicationEdit,
    ApplicationService,
    IssuedApplication,
    NewApplication,
)
from twofa.services.idp.errors import InvalidApplication
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")
TAB: Final = "Applications"
APPLICATIONS_URL: Final = "/admin/applications"
ClientId = Annotated[str, Path(min_length=1, max_length=100, description="The client id.")]
NOTICES: Final = {
    "saved": "Application {who} saved. Its client id and secret are unchanged.",
    "removed": "Application {who} removed: it can no longer sign anyone in.",
}
_SEPARATORS = re.compile(r"[\s,]+")


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(part for part in _SEPARATORS.split(text) if part)


@dataclass(frozen=True)
class ApplicationForm:
    """The form as typed (lists as text), so a refused form comes back unchanged. A new
    application needs a second factor and skips the consent page unless unticked, as
    `NewApplication` does."""

    name: str = ""
    redirect_uris: str = ""
    post_logout_redirect_uris: str = ""
    public: bool = False
    allowed_users: str = ""
    allowed_groups: str = ""
    second_factor_required: bool = True
    skip_consent: bool = True
    backchannel_logout_uri: str = ""

    @classmethod
    def typed(cls, form: FormData) -> ApplicationForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(
            name=text("name"),
            redirect_uris=text("redirect_uris"),
            post_logout_redirect_uris=text("post_logout_redirect_uris"),
            public=text("public") == "on",
            allowed_users=text("allowed_users"),
            allowed_groups=text("allowed_groups"),
            second_factor_required=text("second_factor_required") == "on",
            skip_consent=text("skip_consent") == "on",
            backchannel_logout_uri=text("backchannel_logout_uri"),
        )

    @classmethod
    def of(cls, application: Application) -> ApplicationForm:
        return cls(
            name=application.name,
            redirect_uris="\n".join(application.redirect_uris),
            post_logout_redirect_uris="\n".join(application.post_logout_redirect_uris),
            public=application.public,
            allowed_users=", ".join(application.allowed_users),
            allowed_groups=", ".join(application.allowed_groups),
            second_factor_required=application.second_factor_required,
            skip_consent=application.skip_consent,
            backchannel_logout_uri=application.backchannel_logout_uri or "",
        )

    def new(self) -> NewApplication:
        return NewApplication(
            name=self.name,
            redirect_uris=_lines(self.redirect_uris),
            public=self.public,
            post_logout_redirect_uris=_lines(self.post_logout_redirect_uris),
            allowed_users=_names(self.allowed_users),
            allowed_groups=_names(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            skip_consent=self.skip_consent,
            backchannel_logout_uri=self.backchannel_logout_uri or None,
        )

    def edit(self) -> ApplicationEdit:
        return ApplicationEdit(
            name=self.name,
            redirect_uris=_lines(self.redirect_uris),
            post_logout_redirect_uris=_lines(self.post_logout_redirect_uris),
            allowed_users=_names(self.allowed_users),
            allowed_groups=_names(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            skip_consent=self.skip_consent,
            backchannel_logout_uri=self.backchannel_logout_uri or None,
        )


def _service(request: Request) -> ApplicationService:
    return gateway_of(request).applications


def _issuer(request: Request) -> str:
    """What relying parties are configured with: discovery lives under it."""
    return gateway_of(request).settings.public_url.rstrip("/")


def _admin_page(request: Request, admin: Admin, template: str, **context: Any) -> Response:
    context.setdefault("title", TAB)
    return render(
        request,
        template,
        active_tab=TAB,
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        **context,
    )


async def _page(
    request: Request,
    admin: Admin,
    *,
    form: ApplicationForm | None = None,
    editing: Application | None = None,
    problems: dict[str, str] | None = None,
    error: str | None = None,
) -> Response:
    notice = NOTICES.get(request.query_params.get("done", ""))
    return _admin_page(
        request,
        admin,
        "admin/applications.html",
        status_code=400 if problems or error else 200,
        applications=await _service(request).applications(),
        form=form or ApplicationForm(),
        editing=editing,
        problems=problems or {},
        error=error,
        issuer=_issuer(request),
        notice=notice.format(who=request.query_params.get("who", "")) if notice else None,
    )


def _secret_page(request: Request, admin: Admin, issued: IssuedApplication, what: str) -> Response:
    """The one page that shows a client secret; `render` marks it no-store."""
    return _admin_page(
        request,
        admin,
        "admin/application_secret.html",
        title=f"{issued.application.name}: {what}",
        issued=issued,
        what=what,
        issuer=_issuer(request),
    )


@router.get("/applications")
async def list_applications(request: Request, admin: SignedInAdmin) -> Response:
    return await _page(request, admin)


@router.post("/applications")
async def add_application(request: Request, admin: SignedInAdmin) -> Response:
    form = ApplicationForm.typed(await request.form())
    try:
        issued = await _service(request).add(
            form.new(), actor=admin.username, client=client_of(request)
        )
    except InvalidApplication as refused:
        return await _page(request, admin, form=form, problems=dict(refused.fields))
    return _secret_page(request, admin, issued, "added")


@router.get("/applications/{client_id}")
async def edit_application_page(
    request: Request, admin: SignedInAdmin, client_id: ClientId
) -> Response:
    application = await _service(request).show(client_id)
    return await _page(request, admin, form=ApplicationForm.of(application), editing=application)


@router.post("/applications/{client_id}")
async def save_application(request: Request, admin: SignedInAdmin, client_id: ClientId) -> Response:
    form = ApplicationForm.typed(await request.form())
    service = _service(request)
    try:
        saved = await service.update(
            client_id, form.edit(), actor=admin.username, client=client_of(request)
        )
    except InvalidApplication as refused:
        editing = await service.show(client_id)
        problems = dict(refused.fields)
        return await _page(request, admin, form=form, editing=editing, problems=problems)
    return _done("saved", saved.name)


def _done(done: str, who: str) -> RedirectResponse:
    query = urllib.parse.urlencode({"done": done, "who": who})
    return RedirectResponse(f"{APPLICATIONS_URL}?{query}", status_code=303)


@router.post("/applications/{client_id}/rotate-secret")
async def rotate_secret(request: Request, admin: SignedInAdmin, client_id: ClientId) -> Response:
    """The old secret stops working at once; the new one is on this answer only."""
    try:
        issued = await _service(request).rotate_secret(
            client_id, actor=admin.username, client=client_of(request)
        )
    except InvalidApplication as refused:  # a public client has no secret to rotate
        return await _page(request, admin, error=str(refused))
    return _secret_page(request, admin, issued, "secret rotated")


@router.get("/applications/{client_id}/remove")
async def confirm_remove(request: Request, admin: SignedInAdmin, client_id: ClientId) -> Response:
    """The confirmation step: removing cannot be undone, so it takes a second click."""
    application = await _service(request).show(client_id)
    return _admin_page(
        request,
        admin,
        "admin/application_remove.html",
        title=f"Remove {application.name}",
        application=application,
    )


@router.post("/applications/{client_id}/remove")
async def remove_application(
    request: Request, admin: SignedInAdmin, client_id: ClientId
) -> Response:
    form = await request.form()
    if form.get("confirm") != "yes":
        confirm_url = f"{APPLICATIONS_URL}/{urllib.parse.quote(client_id, safe='')}/remove"
        return RedirectResponse(confirm_url, status_code=303)
    gone = await _service(request).remove(
        client_id, actor=admin.username, client=client_of(request)
    )
    return _done("removed", gone.name)
