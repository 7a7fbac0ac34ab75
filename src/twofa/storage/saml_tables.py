"""The SAML 2.0 identity provider's rows (services.idp.saml): service providers, each one
application of the registry (`applications`, protocol "saml"), the IdP's signing keys, the
persistent NameIDs it made, and the AuthnRequest IDs it has seen (each answered once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from twofa.storage.tables import Base, UtcDateTime


class SamlServiceProviderRow(Base):
    """A SAML service provider, as its metadata describes it: kept whole (`metadata_xml`, what
    pysaml2 reads to check its requests) and as the values twofa itself decides by: its
    AssertionConsumerService endpoints (a response goes only to one of them), its
    SingleLogoutService endpoints, its signing certificates (base64 DER) and whether it signs
    its requests (then an unsigned one is refused)."""

    __tablename__ = "saml_service_providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), unique=True
    )
    entity_id: Mapped[str] = mapped_column(String(1024), unique=True)
    metadata_xml: Mapped[str] = mapped_column(Text)
    # [{"binding": ..., "location": ..., "index": int, "is_default": bool}]
    acs_endpoints: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # [{"binding": ..., "location": ..., "response_location": str | None}]
    slo_endpoints: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    signing_certificates: Mapped[list[str]] = mapped_column(JSON, default=list)
    name_id_format: Mapped[str] = mapped_column(String(16))  # "persistent" | "email"
    authn_requests_signed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SamlSigningKeyRow(Base):
    """An RSA key that signs responses and assertions, its private half sealed at rest
    (security.sealing), and its self-signed certificate (PEM). It is in the metadata from
    `created_at`, signs from `signs_from` (later, after a rotation announced ahead) until
    `retired_at`, and stays in the metadata for the overlap after that."""

    __tablename__ = "saml_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    certificate_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    signs_from: Mapped[datetime] = mapped_column(UtcDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SamlSubjectRow(Base):
    """A persistent NameID (SAML Core §8.3.7): random, one per user and service provider, so
    that two providers cannot correlate a user by it, and stable across renames."""

    __tablename__ = "saml_subjects"

    service_provider_id: Mapped[int] = mapped_column(
        ForeignKey("saml_service_providers.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    name_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SamlRequestRow(Base):
    """An AuthnRequest ID a service provider sent: first seen at `first_seen_at` (a ForceAuthn
    request wants a sign-in later than that), answered at most once (`answered_at` set by a
    conditional UPDATE), kept until `expires_at`, when the request itself is too old to use.
    A request that came by HTTP-POST is kept as it came (`posted_message`, `relay_state`):
    the browser comes back to it from the sign-in by a short URL naming it, checked again."""

    __tablename__ = "saml_requests"

    service_provider_id: Mapped[int] = mapped_column(
        ForeignKey("saml_service_providers.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    posted_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    relay_state: Mapped[str | None] = mapped_column(Text, nullable=True)
