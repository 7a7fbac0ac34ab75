"""The OpenID Connect provider's rows (services.idp): authorization codes, access and refresh
tokens, the signing keys, the subjects users are known by, and the consents they gave. The
applications themselves are in `tables` (one registry for both protocols); the SAML rows are in
`saml_tables`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from twofa.storage.tables import Base, UtcDateTime


class OidcCodeRow(Base):
    """An authorization code, kept as a SHA-256: redeemed at most once (`redeemed_at` set by
    a conditional UPDATE), bound to its client, redirect URI and PKCE challenge. A second
    redemption finds it redeemed and revokes what the first one issued (`issued_jti`)."""

    __tablename__ = "oidc_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(500))
    nonce: Mapped[str | None] = mapped_column(String(500), nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    code_challenge_method: Mapped[str | None] = mapped_column(String(8), nullable=True)
    auth_time: Mapped[datetime] = mapped_column(UtcDateTime)
    amr: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    redeemed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    issued_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The `sessions.id` that signed in (no foreign key: sessions rows are deleted when they
    # end, and that is exactly when the applications it signed in to must be found).
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class OidcAccessTokenRow(Base):
    """An access token for userinfo, kept as a SHA-256; revoked when its code is replayed."""

    __tablename__ = "oidc_access_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class OidcSigningKeyRow(Base):
    """A private key that signs ID tokens, sealed at rest (security.sealing). The newest
    unretired key of each algorithm signs; a retired key stays in the JWKS until
    `retired_at` + the longest token lifetime, so relying parties can still check what it
    signed."""

    __tablename__ = "oidc_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(8))  # ES256 | RS256
    private_jwk_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class OidcSubjectRow(Base):
    """The `sub` an ID token names a user by: random, made at the user's first sign-in to an
    application, never the username (which can be renamed or reused) and independent of the
    gateway's secret keys (rotating them must not change who a relying party sees)."""

    __tablename__ = "oidc_subjects"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OidcRefreshTokenRow(Base):
    """A refresh token, kept as a SHA-256, used at most once (`used_at` set by a conditional
    UPDATE) and replaced by the next of its family. Every rotation of one grant shares
    `family_id` and the family's absolute `expires_at`; presenting a used token revokes the
    family and the access tokens issued with it (`issued_jti`). `auth_time` and `amr` are
    the original sign-in's, copied from the code, so refreshed ID tokens say the same."""

    __tablename__ = "oidc_refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(500))
    auth_time: Mapped[datetime] = mapped_column(UtcDateTime)
    amr: Mapped[list[str]] = mapped_column(JSON)
    issued_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The twofa session the grant was made in (copied from the code): its family is revoked
    # when that session ends. None for grants made before sessions were recorded.
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class OidcConsentRow(Base):
    """What a user agreed to let an application see (`scope`, space-separated), so the
    consent page is not shown again until the application asks for more."""

    __tablename__ = "oidc_consents"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(500))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
