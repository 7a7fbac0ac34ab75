"""SAML service providers in the one registry of applications (services.idp.applications): a
provider is added from its metadata as an application of protocol "saml", with the same
name, user/group limits and second-factor requirement as an OpenID Connect client, and is
listed, shown, edited (its metadata replaced too) and removed like one. Every change is
audited, in the transaction that makes it."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import CLI, ClientInfo
from twofa.services.idp.applications import (
    SAML,
    Application,
    application_of,
    check_name,
    check_name_free,
    name_kept_once,
)
from twofa.services.idp.errors import InvalidApplication, UnknownApplication
from twofa.services.idp.saml.errors import ServiceProviderExists
from twofa.services.idp.saml.sp_metadata import ServiceProviderMetadata, parse_sp_metadata
from twofa.services.state import audit
from twofa.storage.applications import Applications
from twofa.storage.saml import ServiceProviders
from twofa.storage.saml_tables import SamlServiceProviderRow
from twofa.storage.tables import ApplicationRow

# persistent: an opaque NameID per user and provider; email: the username (which is what the
# provider matches its accounts by, an e-mail address or not: "unspecified" format then).
NAME_ID_FORMATS: Final = ("persistent", "email")


@dataclass(frozen=True)
class NewServiceProvider:
    name: str
    metadata_xml: str
    allowed_users: Sequence[str] = ()
    allowed_groups: Sequence[str] = ()
    second_factor_required: bool = True
    name_id_format: str = "persistent"


@dataclass(frozen=True)
class ServiceProviderEdit:
    """What an admin may change on a registered provider: all but its client id. New metadata
    is checked as `add` checks it; None keeps the metadata it has."""

    name: str
    allowed_users: Sequence[str] = ()
    allowed_groups: Sequence[str] = ()
    second_factor_required: bool = True
    name_id_format: str = "persistent"
    metadata_xml: str | None = None


@dataclass(frozen=True)
class ServiceProvider:
    application: Application
    id: int
    entity_id: str
    acs_endpoints: tuple[dict[str, Any], ...]
    slo_endpoints: tuple[dict[str, Any], ...]
    signing_certificates: tuple[str, ...]
    name_id_format: str
    authn_requests_signed: bool
    metadata_xml: str


def service_provider_of(row: SamlServiceProviderRow, app: ApplicationRow) -> ServiceProvider:
    return ServiceProvider(
        application=application_of(app),
        id=row.id,
        entity_id=row.entity_id,
        acs_endpoints=tuple(row.acs_endpoints),
        slo_endpoints=tuple(row.slo_endpoints),
        signing_certificates=tuple(row.signing_certificates),
        name_id_format=row.name_id_format,
        authn_requests_signed=row.authn_requests_signed,
        metadata_xml=row.metadata_xml,
    )


def _check_name_id_format(name_id_format: str) -> None:
    if name_id_format not in NAME_ID_FORMATS:
        raise InvalidApplication("name_id_format", "persistent or email")


def _apply_metadata(
    row: SamlServiceProviderRow, metadata_xml: str, parsed: ServiceProviderMetadata
) -> list[str]:
    """Writes what the metadata says onto the row; the names of the columns that changed."""
    wanted: dict[str, object] = {
        "entity_id": parsed.entity_id,
        "metadata_xml": metadata_xml,
        "acs_endpoints": list(parsed.acs_endpoints),
        "slo_endpoints": list(parsed.slo_endpoints),
        "signing_certificates": list(parsed.signing_certificates),
        "authn_requests_signed": parsed.authn_requests_signed,
    }
    changed = [column for column, value in wanted.items() if getattr(row, column) != value]
    for column in changed:
        setattr(row, column, wanted[column])
    return changed


def _apply_edit(
    app: ApplicationRow, row: SamlServiceProviderRow, edit: ServiceProviderEdit
) -> list[str]:
    """Writes the application's settings of `edit` onto the rows; the names that changed."""
    wanted: dict[str, object] = {
        "name": edit.name,
        "allowed_users": sorted(set(edit.allowed_users)),
        "allowed_groups": sorted(set(edit.allowed_groups)),
        "second_factor_required": edit.second_factor_required,
    }
    changed = [column for column, value in wanted.items() if getattr(app, column) != value]
    for column in changed:
        setattr(app, column, wanted[column])
    if row.name_id_format != edit.name_id_format:
        row.name_id_format = edit.name_id_format
        changed.append("name_id_format")
    return changed


async def _find(
    db: AsyncSession, name_or_entity_id: str
) -> tuple[SamlServiceProviderRow, ApplicationRow]:
    """By its application's name or client id, or by its entity id."""
    found = await ServiceProviders(db).by_entity_id(name_or_entity_id)
    if found is not None:
        return found
    applications = Applications(db)
    app = await applications.by_client_id(name_or_entity_id)
    app = app or await applications.by_name(name_or_entity_id)
    sp = None if app is None else await ServiceProviders(db).by_application(app.id)
    if app is None or sp is None:
        raise UnknownApplication(f"no SAML service provider {name_or_entity_id!r}")
    return sp, app


class ServiceProviderService:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(
        self, new: NewServiceProvider, *, actor: str, client: ClientInfo = CLI
    ) -> ServiceProvider:
        check_name(new.name)
        _check_name_id_format(new.name_id_format)
        parsed = parse_sp_metadata(new.metadata_xml)
        now = self._clock.now()
        with name_kept_once(new.name):
            async with self._db.begin() as db:
                await check_name_free(db, new.name)
                if await ServiceProviders(db).by_entity_id(parsed.entity_id) is not None:
                    raise ServiceProviderExists(
                        f"a service provider with entity id {parsed.entity_id!r} is registered"
                    )
                app = ApplicationRow(
                    name=new.name,
                    protocol=SAML,
                    client_id=f"saml-{secrets.token_hex(16)}",
                    client_secret_hash=None,
                    public=False,
                    redirect_uris=[],
                    post_logout_redirect_uris=[],
                    allowed_users=sorted(set(new.allowed_users)),
                    allowed_groups=sorted(set(new.allowed_groups)),
                    second_factor_required=new.second_factor_required,
                    skip_consent=True,
                    created_at=now,
                    updated_at=now,
                )
                Applications(db).add(app)
                await db.flush()
                row = SamlServiceProviderRow(
                    application_id=app.id,
                    entity_id=parsed.entity_id,
                    metadata_xml=new.metadata_xml,
                    acs_endpoints=list(parsed.acs_endpoints),
                    slo_endpoints=list(parsed.slo_endpoints),
                    signing_certificates=list(parsed.signing_certificates),
                    name_id_format=new.name_id_format,
                    authn_requests_signed=parsed.authn_requests_signed,
                    created_at=now,
                    updated_at=now,
                )
                ServiceProviders(db).add(row)
                await db.flush()
                audit.record(
                    db, self._clock, "application", "added", username=actor, client=client,
                    application=app.name, client_id=app.client_id, protocol=SAML,
                    entity_id=row.entity_id,
                )  # fmt: skip
                return service_provider_of(row, app)

    async def update(
        self,
        name_or_entity_id: str,
        edit: ServiceProviderEdit,
        *,
        actor: str,
        client: ClientInfo = CLI,
    ) -> ServiceProvider:
        """Checked as `add` checks; the client id and the provider's persistent NameIDs stay,
        whatever the new metadata says. The audit record names the fields that changed."""
        check_name(edit.name)
        _check_name_id_format(edit.name_id_format)
        parsed = None if edit.metadata_xml is None else parse_sp_metadata(edit.metadata_xml)
        with name_kept_once(edit.name):
            async with self._db.begin() as db:
                row, app = await _find(db, name_or_entity_id)
                await check_name_free(db, edit.name, current=app.name)
                moved_to = None if parsed is None else parsed.entity_id
                if moved_to not in (None, row.entity_id) and await self._registered(db, moved_to):
                    raise ServiceProviderExists(
                        f"a service provider with entity id {moved_to!r} is registered"
                    )
                changed = _apply_edit(app, row, edit)
                if parsed is not None and edit.metadata_xml is not None:
                    changed += _apply_metadata(row, edit.metadata_xml, parsed)
                now = self._clock.now()
                app.updated_at = row.updated_at = now
                audit.record(
                    db, self._clock, "application", "updated", username=actor, client=client,
                    application=app.name, client_id=app.client_id, protocol=SAML,
                    entity_id=row.entity_id, changed=changed,
                )  # fmt: skip
                return service_provider_of(row, app)

    @staticmethod
    async def _registered(db: AsyncSession, entity_id: str | None) -> bool:
        return (
            entity_id is not None and await ServiceProviders(db).by_entity_id(entity_id) is not None
        )

    async def service_providers(self) -> list[ServiceProvider]:
        async with self._db() as db:
            return [service_provider_of(sp, app) for sp, app in await ServiceProviders(db).all()]

    async def by_entity_id(self, entity_id: str) -> ServiceProvider | None:
        async with self._db() as db:
            found = await ServiceProviders(db).by_entity_id(entity_id)
        return None if found is None else service_provider_of(*found)

    async def show(self, name_or_entity_id: str) -> ServiceProvider:
        """By its application's client id or name, or by its entity id."""
        async with self._db() as db:
            return service_provider_of(*await _find(db, name_or_entity_id))

    async def remove(
        self, name_or_entity_id: str, *, actor: str, client: ClientInfo = CLI
    ) -> ServiceProvider:
        """The application and, with it (cascade), its provider row, NameIDs and requests."""
        gone = await self.show(name_or_entity_id)
        async with self._db.begin() as db:
            await Applications(db).remove(gone.application.id)
            audit.record(
                db, self._clock, "application", "removed", username=actor, client=client,
                application=gone.application.name, client_id=gone.application.client_id,
                protocol=SAML, entity_id=gone.entity_id,
            )  # fmt: skip
        return gone
