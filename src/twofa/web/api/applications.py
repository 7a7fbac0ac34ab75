"""/api/v1/applications: the OpenID Connect clients users sign in to through twofa (list, add,
show, replace, rotate the secret, remove), each change audited as the token. A client secret
is in the answer that made it (add, rotate) and never again: it is kept only as a hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, Path, Response
from pydantic import AfterValidator, BaseModel, Field

from twofa.services.idp.applications import (
    Application,
    ApplicationEdit,
    IssuedApplication,
    NewApplication,
)
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses
from twofa.web.api.models import Name150, RequestModel, bounded_text, storable_text

router = APIRouter(
    prefix="/applications",
    tags=["applications"],
    route_class=ApiRoute,
    responses=error_responses(401, 422),
)
UNKNOWN_APPLICATION = error_responses(404)
MAX_URIS: Final = 20
MAX_NAMES: Final = 500

ApplicationName = Annotated[str, bounded_text(1, 100), AfterValidator(storable_text)]
Uri = Annotated[str, bounded_text(1, 2000), AfterValidator(storable_text)]
ClientIdPath = Annotated[Name150, Path(description="The application's client id (or name).")]


class ApplicationOut(BaseModel):
    name: str
    protocol: str = Field(description="oidc: an OpenID Connect client.")
    client_id: str
    public: bool = Field(description="No secret: PKCE S256 required.")
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    allowed_users: list[str] = Field(description="With allowed_groups empty too: everyone.")
    allowed_groups: list[str]
    second_factor_required: bool
    skip_consent: bool = Field(description="A trusted application: no consent page.")
    backchannel_logout_uri: str | None = Field(
        description="Where a logout token is POSTed when a sign-in session ends (None: not told)."
    )
    created_at: datetime
    updated_at: datetime


class IssuedApplicationOut(ApplicationOut):
    client_secret: str | None = Field(
        description="Shown in this answer only (None for a public client): store it now."
    )


class ApplicationEditIn(RequestModel):
    """Everything but the client id and whether it is public."""

    name: ApplicationName = Field(description="Letters, digits, spaces, '.', '_' or '-'.")
    redirect_uris: Annotated[list[Uri], Field(min_length=1, max_length=MAX_URIS)] = Field(
        description="Absolute https URLs (http on a loopback host), matched exactly."
    )
    post_logout_redirect_uris: Annotated[list[Uri], Field(max_length=MAX_URIS)] = Field(
        default_factory=list, description="Where RP-initiated logout may return."
    )
    allowed_users: Annotated[list[Name150], Field(max_length=MAX_NAMES)] = Field(
        default_factory=list
    )
    allowed_groups: Annotated[list[Name150], Field(max_length=MAX_NAMES)] = Field(
        default_factory=list
    )
    second_factor_required: bool = True
    skip_consent: bool = True
    backchannel_logout_uri: Uri | None = Field(
        default=None,
        description="OpenID Connect Back-Channel Logout: an absolute https URL (http on a "
        "loopback host) the application is told at when a sign-in session ends.",
    )

    def edit(self) -> ApplicationEdit:
        return ApplicationEdit(
            name=self.name,
            redirect_uris=tuple(self.redirect_uris),
            post_logout_redirect_uris=tuple(self.post_logout_redirect_uris),
            allowed_users=tuple(self.allowed_users),
            allowed_groups=tuple(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            skip_consent=self.skip_consent,
            backchannel_logout_uri=self.backchannel_logout_uri,
        )


class ApplicationIn(ApplicationEditIn):
    public: bool = Field(default=False, description="No secret: PKCE S256 required.")

    def new(self) -> NewApplication:
        edit = self.edit()
        return NewApplication(
            name=edit.name,
            redirect_uris=edit.redirect_uris,
            public=self.public,
            post_logout_redirect_uris=edit.post_logout_redirect_uris,
            allowed_users=edit.allowed_users,
            allowed_groups=edit.allowed_groups,
            second_factor_required=edit.second_factor_required,
            skip_consent=edit.skip_consent,
            backchannel_logout_uri=edit.backchannel_logout_uri,
        )


def application_out(application: Application) -> ApplicationOut:
    return ApplicationOut.model_validate(application, from_attributes=True)


def issued_out(issued: IssuedApplication) -> IssuedApplicationOut:
    fields = application_out(issued.application).model_dump()
    return IssuedApplicationOut(**fields, client_secret=issued.client_secret)


@router.get("", summary="Every application (never a secret)")
async def list_applications(api: Api) -> list[ApplicationOut]:
    return [application_out(app) for app in await api.gateway.applications.applications()]


@router.post("", summary="Add an application; its secret is in this answer only", status_code=201)
async def add_application(api: Api, body: ApplicationIn) -> IssuedApplicationOut:
    issued = await api.gateway.applications.add(body.new(), actor=api.actor, client=api.client)
    return issued_out(issued)


@router.get("/{client_id}", summary="One application", responses=UNKNOWN_APPLICATION)
async def show_application(api: Api, client_id: ClientIdPath) -> ApplicationOut:
    return application_out(await api.gateway.applications.show(client_id))


@router.put(
    "/{client_id}",
    summary="Replace an application's settings (its client id and secret stay)",
    responses=UNKNOWN_APPLICATION,
)
async def put_application(
    api: Api, client_id: ClientIdPath, body: ApplicationEditIn
) -> ApplicationOut:
    saved = await api.gateway.applications.update(
        client_id, body.edit(), actor=api.actor, client=api.client
    )
    return application_out(saved)


@router.post(
    "/{client_id}/rotate-secret",
    summary="A new secret, in this answer only; the old one stops working at once",
    responses=UNKNOWN_APPLICATION,
)
async def rotate_secret(api: Api, client_id: ClientIdPath) -> IssuedApplicationOut:
    issued = await api.gateway.applications.rotate_secret(
        client_id, actor=api.actor, client=api.client
    )
    return issued_out(issued)


@router.delete(
    "/{client_id}",
    summary="Remove an application",
    status_code=204,
    responses=UNKNOWN_APPLICATION,
)
async def delete_application(api: Api, client_id: ClientIdPath) -> Response:
    await api.gateway.applications.remove(client_id, actor=api.actor, client=api.client)
    return Response(status_code=204)
