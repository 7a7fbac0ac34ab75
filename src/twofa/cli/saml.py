"""`twofa saml`: twofa as a SAML 2.0 identity provider from the command line. `sp add`
registers a service provider from its metadata file as an application (the same registry,
user/group limits and second-factor requirement as OpenID Connect clients); `sp list|show|
remove`; `keys rotate` retires the signing key in use (its certificate stays in the metadata
for the overlap) and makes a new one; `metadata` prints the IdP's metadata for a provider's
admin. Every change is audited with the actor `cli`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Final

import typer

from twofa.cli.application_options import AllowedGroups, AllowedUsers, SecondFactorRequired
from twofa.cli.common import echo_json, render_table, run_with_gateway, yes_no
from twofa.services.idp.saml.registry import NewServiceProvider, ServiceProvider
from twofa.services.idp.saml.wiring import SamlServices, build_saml
from twofa.services.runtime import Gateway

saml_app = typer.Typer(
    help="twofa as a SAML 2.0 identity provider: service providers, signing keys, metadata.",
    no_args_is_help=True,
)
sp_app = typer.Typer(
    help="SAML service providers: add (from metadata), list, show, remove.", no_args_is_help=True
)
saml_keys_app = typer.Typer(help="The key that signs SAML responses.", no_args_is_help=True)
saml_app.add_typer(sp_app, name="sp")
saml_app.add_typer(saml_keys_app, name="keys")
CLI_ACTOR: Final = "cli"
COLUMNS: Final = ("NAME", "ENTITY ID", "NAMEID", "2FA", "SIGNS REQUESTS")


def _saml(gateway: Gateway) -> SamlServices:
    settings = gateway.settings
    return build_saml(gateway.db, gateway.clock, settings.secret_keys, settings.public_url)


def _as_json(sp: ServiceProvider) -> dict[str, object]:
    app = sp.application
    return {
        "name": app.name,
        "protocol": app.protocol,
        "client_id": app.client_id,
        "entity_id": sp.entity_id,
        "acs_endpoints": list(sp.acs_endpoints),
        "slo_endpoints": list(sp.slo_endpoints),
        "signing_certificates": len(sp.signing_certificates),
        "authn_requests_signed": sp.authn_requests_signed,
        "name_id_format": sp.name_id_format,
        "allowed_users": list(app.allowed_users),
        "allowed_groups": list(app.allowed_groups),
        "second_factor_required": app.second_factor_required,
        "created_at": app.created_at.isoformat(),
    }


@sp_app.command("add")
def add_service_provider(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the application is, e.g. Confluence.")],
    metadata: Annotated[
        Path,
        typer.Option("--metadata", help="The provider's SAML metadata (XML file).", exists=True),
    ],
    user: AllowedUsers = None,
    group: AllowedGroups = None,
    second_factor: SecondFactorRequired = True,
    nameid: Annotated[
        str,
        typer.Option(
            "--nameid",
            help="persistent (opaque, per user and provider) or email (the username).",
        ),
    ] = "persistent",
) -> None:
    """Register a service provider; with no --user or --group, everyone may use it."""
    new = NewServiceProvider(
        name=name,
        metadata_xml=metadata.read_text(encoding="utf-8"),
        allowed_users=user or (),
        allowed_groups=group or (),
        second_factor_required=second_factor,
        name_id_format=nameid,
    )

    async def add(gateway: Gateway) -> ServiceProvider:
        return await _saml(gateway).providers.add(new, actor=CLI_ACTOR)

    added = run_with_gateway(ctx, add)
    typer.echo(f"registered {added.application.name!r}: {added.entity_id}")
    for endpoint in added.acs_endpoints:
        typer.echo(f"  ACS {endpoint['location']}")


@sp_app.command("list")
def list_service_providers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every registered service provider."""

    async def listed(gateway: Gateway) -> list[ServiceProvider]:
        return await _saml(gateway).providers.service_providers()

    providers = run_with_gateway(ctx, listed)
    if as_json:
        echo_json([_as_json(sp) for sp in providers])
    elif not providers:
        typer.echo("no SAML service providers yet: add one with `twofa saml sp add`")
    else:
        rows = [
            (
                sp.application.name,
                sp.entity_id,
                sp.name_id_format,
                yes_no(sp.application.second_factor_required),
                yes_no(sp.authn_requests_signed),
            )
            for sp in providers
        ]
        typer.echo(render_table(COLUMNS, rows))


@sp_app.command("show")
def show_service_provider(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(metavar="NAME|ENTITY_ID")],
) -> None:
    """One service provider's settings, as JSON."""

    async def shown(gateway: Gateway) -> ServiceProvider:
        return await _saml(gateway).providers.show(provider)

    echo_json(_as_json(run_with_gateway(ctx, shown)))


@sp_app.command("remove")
def remove_service_provider(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(metavar="NAME|ENTITY_ID")],
) -> None:
    """Remove a service provider: its NameIDs and pending requests go with it."""

    async def removed(gateway: Gateway) -> ServiceProvider:
        return await _saml(gateway).providers.remove(provider, actor=CLI_ACTOR)

    gone = run_with_gateway(ctx, removed)
    typer.echo(f"removed {gone.application.name!r} ({gone.entity_id})")


@saml_keys_app.command("rotate")
def rotate_keys(
    ctx: typer.Context,
    now: Annotated[
        bool,
        typer.Option(
            "--now", help="Sign with the new key at once (a key thought stolen): no announcement."
        ),
    ] = False,
) -> None:
    """Make a new signing key: in the metadata at once, signing a week later (the key in use
    signs until then; give providers the new metadata meanwhile), or at once with --now."""

    async def rotated(gateway: Gateway) -> tuple[str, datetime]:
        return await _saml(gateway).keys.rotate(actor=CLI_ACTOR, immediately=now)

    kid, starts = run_with_gateway(ctx, rotated)
    typer.echo(f"new signing key: {kid}, signing from {starts.isoformat()}")


@saml_app.command("metadata")
def print_metadata(ctx: typer.Context) -> None:
    """The IdP's metadata (also served at <public_url>/saml/metadata)."""

    async def described(gateway: Gateway) -> str:
        return await _saml(gateway).idp.metadata()

    typer.echo(run_with_gateway(ctx, described))
