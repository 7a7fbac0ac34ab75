"""`twofa oidc`: twofa as an OpenID Connect provider from the command line. `client add`
registers a relying party and prints its client id and secret (the secret once, alone on
stdout's last line, kept only as a hash); `client list|show|rotate-secret|remove`; `keys
rotate` retires the ID-token signing keys in use (they stay published for a day) and makes
new ones. Every change is audited with the actor `cli`."""

from __future__ import annotations

from typing import Annotated, Final

import typer

from twofa.cli.application_options import AllowedGroups, AllowedUsers, SecondFactorRequired
from twofa.cli.common import echo_json, render_table, run_with_gateway, yes_no
from twofa.services.idp.applications import Application, IssuedApplication, NewApplication
from twofa.services.runtime import Gateway

oidc_app = typer.Typer(
    help="twofa as an OpenID Connect provider: clients and signing keys.", no_args_is_help=True
)
client_app = typer.Typer(
    help="OpenID Connect clients (relying parties): add, list, show, rotate-secret, remove.",
    no_args_is_help=True,
)
oidc_keys_app = typer.Typer(help="The keys that sign ID tokens.", no_args_is_help=True)
oidc_app.add_typer(client_app, name="client")
oidc_app.add_typer(oidc_keys_app, name="keys")
CLI_ACTOR: Final = "cli"
COLUMNS: Final = ("NAME", "CLIENT ID", "TYPE", "2FA", "REDIRECT URIS")


def _as_json(application: Application) -> dict[str, object]:
    return {
        "name": application.name,
        "protocol": application.protocol,
        "client_id": application.client_id,
        "public": application.public,
        "redirect_uris": list(application.redirect_uris),
        "post_logout_redirect_uris": list(application.post_logout_redirect_uris),
        "allowed_users": list(application.allowed_users),
        "allowed_groups": list(application.allowed_groups),
        "second_factor_required": application.second_factor_required,
        "skip_consent": application.skip_consent,
        "backchannel_logout_uri": application.backchannel_logout_uri,
        "created_at": application.created_at.isoformat(),
        "updated_at": application.updated_at.isoformat(),
    }


def _issued(issued: IssuedApplication, what: str) -> None:
    app = issued.application
    typer.echo(f"client_id: {app.client_id}")
    if issued.client_secret is not None:
        typer.echo(f"client_secret: {issued.client_secret}")
        typer.secho(
            f"{what} {app.name!r}. This is the only time the secret is shown: store it now "
            "(it is kept only as a hash).",
            fg=typer.colors.YELLOW,
            err=True,
        )
    else:
        typer.secho(f"{what} {app.name!r}, a public client (PKCE, no secret).", err=True)


@client_app.command("add")
def add_client(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the application is, e.g. Jira.")],
    redirect_uri: Annotated[
        list[str], typer.Option("--redirect-uri", help="An exact redirect URI (repeatable).")
    ],
    public: Annotated[
        bool, typer.Option("--public", help="A public client: no secret, PKCE S256 required.")
    ] = False,
    post_logout_redirect_uri: Annotated[
        list[str] | None,
        typer.Option("--post-logout-redirect-uri", help="Where logout may return (repeatable)."),
    ] = None,
    user: AllowedUsers = None,
    group: AllowedGroups = None,
    second_factor: SecondFactorRequired = True,
    backchannel_logout_uri: Annotated[
        str | None,
        typer.Option(
            "--backchannel-logout-uri",
            help="Where to POST a logout token when a sign-in session ends (back-channel logout).",
        ),
    ] = None,
) -> None:
    """Register an OpenID Connect client; with no --user or --group, everyone may use it."""
    new = NewApplication(
        name=name,
        redirect_uris=redirect_uri,
        public=public,
        post_logout_redirect_uris=post_logout_redirect_uri or (),
        allowed_users=user or (),
        allowed_groups=group or (),
        second_factor_required=second_factor,
        backchannel_logout_uri=backchannel_logout_uri,
    )

    async def add(gateway: Gateway) -> IssuedApplication:
        return await gateway.applications.add(new, actor=CLI_ACTOR)

    _issued(run_with_gateway(ctx, add), "registered")


@client_app.command("list")
def list_clients(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every registered client; secrets are never stored, so never shown."""

    async def listed(gateway: Gateway) -> list[Application]:
        return await gateway.applications.applications()

    applications = run_with_gateway(ctx, listed)
    if as_json:
        echo_json([_as_json(app) for app in applications])
    elif not applications:
        typer.echo("no OpenID Connect clients yet: add one with `twofa oidc client add`")
    else:
        rows = [
            (
                app.name,
                app.client_id,
                "public" if app.public else "confidential",
                yes_no(app.second_factor_required),
                " ".join(app.redirect_uris),
            )
            for app in applications
        ]
        typer.echo(render_table(COLUMNS, rows))


@client_app.command("show")
def show_client(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(metavar="NAME|CLIENT_ID")],
) -> None:
    """One client's settings, as JSON."""

    async def shown(gateway: Gateway) -> Application:
        return await gateway.applications.show(client)

    echo_json(_as_json(run_with_gateway(ctx, shown)))


@client_app.command("rotate-secret")
def rotate_secret(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(metavar="NAME|CLIENT_ID")],
) -> None:
    """A new client secret, printed once; the old one stops working at once."""

    async def rotated(gateway: Gateway) -> IssuedApplication:
        return await gateway.applications.rotate_secret(client, actor=CLI_ACTOR)

    _issued(run_with_gateway(ctx, rotated), "new secret for")


@client_app.command("remove")
def remove_client(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(metavar="NAME|CLIENT_ID")],
) -> None:
    """Remove a client: its codes and tokens go with it."""

    async def removed(gateway: Gateway) -> Application:
        return await gateway.applications.remove(client, actor=CLI_ACTOR)

    gone = run_with_gateway(ctx, removed)
    typer.echo(f"removed {gone.name!r} ({gone.client_id})")


@oidc_keys_app.command("rotate")
def rotate_keys(ctx: typer.Context) -> None:
    """Retire the signing keys in use (published for a day more) and make new ones."""

    async def rotated(gateway: Gateway) -> list[str]:
        return await gateway.oidc_keys.rotate(actor=CLI_ACTOR)

    kids = run_with_gateway(ctx, rotated)
    typer.echo("new signing keys: " + ", ".join(kids))
