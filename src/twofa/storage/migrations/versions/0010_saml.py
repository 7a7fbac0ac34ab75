"""saml_service_providers (SAML service providers, one per `applications` row of protocol
"saml"), saml_signing_keys (sealed RSA keys and their certificates, rotated with overlap),
saml_subjects (persistent NameIDs, one per user and provider) and saml_requests (AuthnRequest
IDs, answered once, kept until they expire).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "saml_service_providers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.String(length=1024), nullable=False),
        sa.Column("metadata_xml", sa.Text(), nullable=False),
        sa.Column("acs_endpoints", sa.JSON(), nullable=False),
        sa.Column("slo_endpoints", sa.JSON(), nullable=False),
        sa.Column("signing_certificates", sa.JSON(), nullable=False),
        sa.Column("name_id_format", sa.String(length=16), nullable=False),
        sa.Column("authn_requests_signed", sa.Boolean(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("application_id"),
        sa.UniqueConstraint("entity_id"),
    )
    op.create_table(
        "saml_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_key_sealed", sa.Text(), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        _when("created_at"),
        _when("signs_from"),
        _when("retired_at", nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "saml_subjects",
        sa.Column("service_provider_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name_id", sa.String(length=64), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["service_provider_id"], ["saml_service_providers.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("service_provider_id", "user_id"),
        sa.UniqueConstraint("name_id"),
    )
    op.create_index("ix_saml_subjects_user_id", "saml_subjects", ["user_id"])
    op.create_table(
        "saml_requests",
        sa.Column("service_provider_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=256), nullable=False),
        _when("first_seen_at"),
        _when("answered_at", nullable=True),
        _when("expires_at"),
        sa.Column("posted_message", sa.Text(), nullable=True),
        sa.Column("relay_state", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["service_provider_id"], ["saml_service_providers.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("service_provider_id", "request_id"),
    )
    op.create_index("ix_saml_requests_expires_at", "saml_requests", ["expires_at"])


def downgrade() -> None:
    op.drop_table("saml_requests")
    op.drop_table("saml_subjects")
    op.drop_table("saml_signing_keys")
    op.drop_table("saml_service_providers")
