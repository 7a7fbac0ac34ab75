"""The console's Applications page: the OpenID Connect clients and SAML service providers users
sign in to through twofa, with add, edit, rotate secret (OIDC) and remove (after a
confirmation). A new or rotated secret is shown on the answer to that POST and nowhere else: it
is kept only as a hash. A SAML provider is added from its metadata, pasted or uploaded (its
form: applications_saml_pages). Handlers read forms and render; the registries and their audit
records live in `ApplicationService` and `ServiceProviderService`."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from twofa.services.idp.applications import (
    SAML,
    Application,
    ApplicationEdit,
    ApplicationService,
    IssuedApplication,
    NewApplication,
)
from twofa.services.idp.errors import InvalidApplication
from twofa.services.idp.saml.errors import InvalidServiceProvider, ServiceProviderExists
from twofa.services.idp.saml.registry import ServiceProvider, ServiceProviderService
from twofa.services.idp.saml.server import idp_entity_id
from twofa.web.admin.applications_saml_pages import (
    NAME_ID_CHOICES,
    SAML_FIELD_PREFIX,
    ServiceProviderForm,
    acs_urls,
    form_problems,
)
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.saml import saml_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")
TAB: Final = "Applications"
APPLICATIONS_URL: Final = "/admin/applications"
ClientId = Annotated[str, Path(min_length=1, max_length=100, description="The client id.")]
NOTICES: Final = {
    "saved": "Application {who} saved. Its client id and secret are unchanged.",
    "saml_added": "SAML service provider {who} added.",
    "saml_saved": "SAML service provider {who} saved.",
    "removed": "Application {who} removed: it can no longer sign anyone in.",
}
# What a refused SAML form is refused with: the registry's checks of the metadata and names.
SAML_REFUSALS: Final = (InvalidApplication, InvalidServiceProvider, ServiceProviderExists)
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


def _providers(request: Request) -> ServiceProviderService:
    return saml_of(request).providers


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
    saml_form: ServiceProviderForm | None = None,
    saml_editing: ServiceProvider | None = None,
    problems: dict[str, str] | None = None,
    error: str | None = None,
) -> Response:
    """The list and both forms: the OpenID Connect one (add, or edit `editing`) and the SAML
    one (add, or edit `saml_editing`); while one application is edited, only its form."""
    notice = NOTICES.get(request.query_params.get("done", ""))
    providers = await _providers(request).service_providers()
    return _admin_page(
        request,
        admin,
        "admin/applications.html",
        status_code=400 if problems or error else 200,
        applications=await _service(request).applications(),
        providers={provider.application.id: provider for provider in providers},
        acs_urls=acs_urls,
        form=form or ApplicationForm(),
        editing=editing,
        saml_form=saml_form or ServiceProviderForm(),
        saml_editing=saml_editing,
        name_id_choices=NAME_ID_CHOICES,
        problems=problems or {},
        saml_refused=any(field.startswith(SAML_FIELD_PREFIX) for field in problems or {}),
        error=error,
        issuer=_issuer(request),
        idp_metadata_url=idp_entity_id(_issuer(request)),
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


@router.post("/applications/saml")
async def add_service_provider(request: Request, admin: SignedInAdmin) -> Response:
    """Registered before the `{client_id}` routes, which would take "saml" for a client id."""
    form, problems = await ServiceProviderForm.typed(await request.form())
    if problems:
        return await _page(request, admin, saml_form=form, problems=problems)
    try:
        added = await _providers(request).add(
            form.new(), actor=admin.username, client=client_of(request)
        )
    except SAML_REFUSALS as refused:
        return await _page(request, admin, saml_form=form, problems=form_problems(refused))
    return _done("saml_added", added.application.name)


@router.get("/applications/{client_id}")
async def edit_application_page(
    request: Request, admin: SignedInAdmin, client_id: ClientId
) -> Response:
    application = await _service(request).show(client_id)
    if application.protocol == SAML:
        provider = await _providers(request).show(application.client_id)
        form = ServiceProviderForm.of(provider)
        return await _page(request, admin, saml_form=form, saml_editing=provider)
    return await _page(request, admin, form=ApplicationForm.of(application), editing=application)


@router.post("/applications/{client_id}")
async def save_application(request: Request, admin: SignedInAdmin, client_id: ClientId) -> Response:
    service = _service(request)
    if (await service.show(client_id)).protocol == SAML:
        return await _save_service_provider(request, admin, client_id)
    form = ApplicationForm.typed(await request.form())
    try:
        saved = await service.update(
            client_id, form.edit(), actor=admin.username, client=client_of(request)
        )
    except InvalidApplication as refused:
        editing = await service.show(client_id)
        problems = dict(refused.fields)
        return await _page(request, admin, form=form, editing=editing, problems=problems)
    return _done("saved", saved.name)


async def _save_service_provider(request: Request, admin: Admin, client_id: str) -> Response:
    form, problems = await ServiceProviderForm.typed(await request.form())
    providers = _providers(request)
    if not problems:
        try:
            saved = await providers.update(
                client_id, form.edit(), actor=admin.username, client=client_of(request)
            )
        except SAML_REFUSALS as refused:
            problems = form_problems(refused)
        else:
            return _done("saml_saved", saved.application.name)
    editing = await providers.show(client_id)
    return await _page(request, admin, saml_form=form, saml_editing=editing, problems=problems)


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
    service, client = _service(request), client_of(request)
    if (await service.show(client_id)).protocol == SAML:
        provider = await _providers(request).remove(client_id, actor=admin.username, client=client)
        return _done("removed", provider.application.name)
    gone = await service.remove(client_id, actor=admin.username, client=client)
    return _done("removed", gone.name)
