"""A service provider's metadata as twofa registers it: read and checked by pysaml2 (schema,
one SPSSODescriptor), then reduced to what twofa decides by: the entity id, the
AssertionConsumerService endpoints a response may go to, the SingleLogoutService endpoints,
the signing certificates and whether the provider signs its AuthnRequests."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.attribute_converter import ac_factory
from saml2.mdstore import InMemoryMetaData

from twofa.services.idp.saml.errors import InvalidServiceProvider

# The bindings twofa answers a sign-in on, and takes a logout request on.
ACS_BINDINGS: Final = (BINDING_HTTP_POST,)
SLO_BINDINGS: Final = (BINDING_HTTP_REDIRECT,)
MAX_METADATA_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class ServiceProviderMetadata:
    entity_id: str
    acs_endpoints: tuple[dict[str, Any], ...]
    slo_endpoints: tuple[dict[str, Any], ...]
    signing_certificates: tuple[str, ...]  # base64 DER, as in the metadata
    authn_requests_signed: bool


def _endpoint_url_problem(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and loopback:
        return None
    return f"{url!r} must be an https URL (http only on a loopback host)"


def _loaded(xml: str) -> tuple[str, dict[str, Any], InMemoryMetaData]:
    if len(xml.encode()) > MAX_METADATA_BYTES:
        raise InvalidServiceProvider("the metadata is larger than 256 KiB")
    store = InMemoryMetaData(ac_factory(), xml)
    try:
        store.load()
    except Exception as unreadable:  # pysaml2 raises many kinds for one problem: unreadable
        raise InvalidServiceProvider(f"the metadata cannot be read: {unreadable}") from None
    entities = list(store.keys())
    if len(entities) != 1:
        raise InvalidServiceProvider("the metadata must describe exactly one entity")
    entity_id = entities[0]
    descriptors = store[entity_id].get("spsso_descriptor") or []
    if len(descriptors) != 1:
        raise InvalidServiceProvider("the metadata has no SPSSODescriptor (not a service provider)")
    return entity_id, descriptors[0], store


def parse_sp_metadata(xml: str) -> ServiceProviderMetadata:
    """The provider `xml` describes; `InvalidServiceProvider` saying what is wrong else."""
    entity_id, descriptor, store = _loaded(xml)
    acs = [
        {
            "binding": service["binding"],
            "location": service["location"],
            "index": int(service.get("index") or 0),
            "is_default": str(service.get("is_default", "")).lower() == "true",
        }
        for service in descriptor.get("assertion_consumer_service") or []
        if service.get("binding") in ACS_BINDINGS
    ]
    if not acs:
        raise InvalidServiceProvider(
            "the metadata has no AssertionConsumerService with the HTTP-POST binding"
        )
    slo = [
        {
            "binding": service["binding"],
            "location": service["location"],
            "response_location": service.get("response_location"),
        }
        for service in descriptor.get("single_logout_service") or []
        if service.get("binding") in SLO_BINDINGS
    ]
    for endpoint in (*acs, *slo):
        problem = _endpoint_url_problem(endpoint["location"])
        if problem is not None:
            raise InvalidServiceProvider(problem)
    certificates = tuple(cert for _, cert in store.certs(entity_id, "spsso", "signing"))
    signs = str(descriptor.get("authn_requests_signed", "")).lower() == "true"
    if signs and not certificates:
        raise InvalidServiceProvider(
            "the metadata says its requests are signed but has no signing certificate"
        )
    return ServiceProviderMetadata(
        entity_id=entity_id,
        acs_endpoints=tuple(acs),
        slo_endpoints=tuple(slo),
        signing_certificates=tuple("".join(c.split()) for c in certificates),
        authn_requests_signed=signs,
    )
