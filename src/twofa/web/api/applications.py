"""/api/v1/applications: the applications users sign in to through twofa, OpenID Connect
clients and SAML service providers in one list (show, remove), each change audited as the
token. A client is added and replaced here, a service provider (from its metadata) under
/applications/saml. A client secret is in the answer that made it (add, rotate) and never
again: it is kept only as a hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Path, Response
from pydantic import AfterValidator, BaseModel, Field

from twofa.services.idp.applications import (
    SAML,
    Application,
    ApplicationEdit,
    IssuedApplication,
    NewApplication,
)
from twofa.services.idp.saml.registry import (
    NewServiceProvider,
    ServiceProvider,
    ServiceProviderEdit,
    ServiceProviderService,
)
from twofa.services.idp.saml.sp_metadata import MAX_METADATA_BYTES
from twofa.web.api.auth import Api, ApiContext
from twofa.web.api.errors import ApiRoute, error_responses
from twofa.web.api.models import Name150, RequestModel, bounded_text, storable_text

router = APIRouter(
    prefix="/applications",
    tags=["applications"],
    route_class=ApiRoute,
    responses=error_responses(401, 422),
)
UNKNOWN_APPLICATION = error_responses(404)
ENTITY_ID_TAKEN = error_responses(409)
MAX_URIS: Final = 20
MAX_NAMES: Final = 500

ApplicationName = Annotated[str, bounded_text(1, 100), AfterValidator(storable_text)]
Uri = Annotated[str, bounded_text(1, 2000), AfterValidator(storable_text)]
ClientIdPath = Annotated[Name150, Path(description="The application's client id (or name).")]
Metadata = Annotated[str, bounded_text(1, MAX_METADATA_BYTES), AfterValidator(storable_text)]
NameIdFormat = Literal["persistent", "email"]


class ServiceProviderOut(BaseModel):
    """What twofa took from a SAML service provider's metadata, and its NameID format."""

    entity_id: str
    acs_urls: list[str] = Field(description="Where a response may be posted (HTTP-POST).")
    slo_urls: list[str] = Field(description="Where a logout response goes (HTTP-Redirect).")
    signing_certificates: int = Field(description="How many signing certificates it has.")
    authn_requests_signed: bool = Field(description="Its unsigned requests are refused.")
    nameid_format: NameIdFormat = Field(
        description="persistent: opaque, per user and provider; email: the username."
    )


class ApplicationOut(BaseModel):
    name: str
    protocol: Literal["oidc", "saml"] = Field(
        description="oidc: an OpenID Connect client; saml: a SAML service provider (`saml`)."
    )
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
    saml: ServiceProviderOut | None = Field(
        default=None, description="A SAML service provider's own settings (None: OIDC)."
    )


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


class ServiceProviderEditIn(RequestModel):
    """A SAML service provider's settings; its client id stays."""

    name: ApplicationName = Field(description="Letters, digits, spaces, '.', '_' or '-'.")
    metadata: Metadata | None = Field(
        default=None,
        description="New SAML metadata (XML) to replace the provider's; null keeps the one it has.",
    )
    allowed_users: Annotated[list[Name150], Field(max_length=MAX_NAMES)] = Field(
        default_factory=list
    )
    allowed_groups: Annotated[list[Name150], Field(max_length=MAX_NAMES)] = Field(
        default_factory=list
    )
    second_factor_required: bool = True
    nameid_format: NameIdFormat = Field(
        default="persistent",
        description="persistent: opaque, per user and provider; email: the username.",
    )

    def edit(self) -> ServiceProviderEdit:
        return ServiceProviderEdit(
            name=self.name,
            allowed_users=tuple(self.allowed_users),
            allowed_groups=tuple(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            name_id_format=self.nameid_format,
            metadata_xml=self.metadata,
        )


class ServiceProviderIn(ServiceProviderEditIn):
    metadata: Metadata = Field(
        description="The provider's SAML metadata (XML): its entity id, ACS URLs and signing "
        "certificate are taken from it."
    )

    def new(self) -> NewServiceProvider:
        return NewServiceProvider(
            name=self.name,
            metadata_xml=self.metadata,
            allowed_users=tuple(self.allowed_users),
            allowed_groups=tuple(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            name_id_format=self.nameid_format,
        )


def application_out(
    application: Application, provider: ServiceProvider | None = None
) -> ApplicationOut:
    out = ApplicationOut.model_validate(application, from_attributes=True)
    if provider is not None:
        out.saml = ServiceProviderOut(
            entity_id=provider.entity_id,
            acs_urls=[str(endpoint["location"]) for endpoint in provider.acs_endpoints],
            slo_urls=[str(endpoint["location"]) for endpoint in provider.slo_endpoints],
            signing_certificates=len(provider.signing_certificates),
            authn_requests_signed=provider.authn_requests_signed,
            nameid_format="persistent" if provider.name_id_format == "persistent" else "email",
        )
    return out


def provider_out(provider: ServiceProvider) -> ApplicationOut:
    return application_out(provider.application, provider)


def providers_of(api: ApiContext) -> ServiceProviderService:
    return ServiceProviderService(api.gateway.db, api.gateway.clock)


def issued_out(issued: IssuedApplication) -> IssuedApplicationOut:
    fields = application_out(issued.application).model_dump()
    return IssuedApplicationOut(**fields, client_secret=issued.client_secret)


@router.get("", summary="Every application, of both protocols (never a secret)")
async def list_applications(api: Api) -> list[ApplicationOut]:
    providers = {sp.application.id: sp for sp in await providers_of(api).service_providers()}
    applications = await api.gateway.applications.applications()
    return [application_out(app, providers.get(app.id)) for app in applications]


@router.post("", summary="Add an application; its secret is in this answer only", status_code=201)
async def add_application(api: Api, body: ApplicationIn) -> IssuedApplicationOut:
    issued = await api.gateway.applications.add(body.new(), actor=api.actor, client=api.client)
    return issued_out(issued)


@router.post(
    "/saml",
    summary="Add a SAML service provider from its metadata",
    status_code=201,
    responses=ENTITY_ID_TAKEN,
)
async def add_service_provider(api: Api, body: ServiceProviderIn) -> ApplicationOut:
    added = await providers_of(api).add(body.new(), actor=api.actor, client=api.client)
    return provider_out(added)


@router.put(
    "/saml/{client_id}",
    summary="Replace a SAML service provider's settings (and metadata, when given)",
    responses={**UNKNOWN_APPLICATION, **ENTITY_ID_TAKEN},
)
async def put_service_provider(
    api: Api, client_id: ClientIdPath, body: ServiceProviderEditIn
) -> ApplicationOut:
    saved = await providers_of(api).update(
        client_id, body.edit(), actor=api.actor, client=api.client
    )
    return provider_out(saved)


@router.get("/{client_id}", summary="One application", responses=UNKNOWN_APPLICATION)
async def show_application(api: Api, client_id: ClientIdPath) -> ApplicationOut:
    application = await api.gateway.applications.show(client_id)
    if application.protocol == SAML:
        return provider_out(await providers_of(api).show(application.client_id))
    return application_out(application)


@router.put(
    "/{client_id}",
    summary="Replace an OpenID Connect client's settings (its client id and secret stay)",
    description="A SAML service provider is replaced at PUT /applications/saml/{client_id}.",
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
    summary="Remove an application, of either protocol",
    status_code=204,
    responses=UNKNOWN_APPLICATION,
)
async def delete_application(api: Api, client_id: ClientIdPath) -> Response:
    applications = api.gateway.applications
    if (await applications.show(client_id)).protocol == SAML:
        await providers_of(api).remove(client_id, actor=api.actor, client=api.client)
    else:
        await applications.remove(client_id, actor=api.actor, client=api.client)
    return Response(status_code=204)
