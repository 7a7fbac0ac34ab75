"""The SAML identity provider's services, built from the gateway's parts (the web app and the
CLI each build one and keep it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.security.sealing import Sealer
from twofa.services.idp.saml.keys import SamlKeyService
from twofa.services.idp.saml.registry import ServiceProviderService
from twofa.services.idp.saml.slo import SingleLogout
from twofa.services.idp.saml.sso import SamlIdentityProvider


@dataclass(frozen=True)
class SamlServices:
    keys: SamlKeyService
    providers: ServiceProviderService
    idp: SamlIdentityProvider
    logout: SingleLogout


def build_saml(
    db: async_sessionmaker[AsyncSession], clock: Clock, secret_keys: Sequence[str], public_url: str
) -> SamlServices:
    keys = SamlKeyService(db, clock, Sealer(secret_keys))
    providers = ServiceProviderService(db, clock)
    idp = SamlIdentityProvider(db, clock, keys, providers, public_url)
    return SamlServices(keys, providers, idp, SingleLogout(idp, clock))
