"""The `twofa` command: one entry point for every admin action.

Sub-commands live in their own modules and are mounted here.
"""

from __future__ import annotations

import typer

from twofa import __version__
from twofa.cli.access import access_app
from twofa.cli.admins import admin_app
from twofa.cli.audit import audit_app
from twofa.cli.authenticator_cmd import authenticator_app
from twofa.cli.common import ConfigFileOption, remember_global_options
from twofa.cli.db import db_app
from twofa.cli.doctor import doctor
from twofa.cli.duo import duo_app
from twofa.cli.groups import group_app
from twofa.cli.keys import keys_app
from twofa.cli.oidc import oidc_app
from twofa.cli.policy import policy_app
from twofa.cli.questions import questions_app
from twofa.cli.saml import saml_app
from twofa.cli.serve import demo, serve
from twofa.cli.settings_cmd import settings_app
from twofa.cli.simulator import simulator_app
from twofa.cli.smtp import smtp_app
from twofa.cli.tokens import token_app
from twofa.cli.users import user_app

app = typer.Typer(
    name="twofa",
    help="twofa: a self-hosted two-factor authentication gateway with Duo Push.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(user_app, name="user")
app.add_typer(group_app, name="group")
app.add_typer(policy_app, name="policy")
app.add_typer(questions_app, name="questions")
app.add_typer(duo_app, name="duo")
app.add_typer(smtp_app, name="smtp")
app.add_typer(settings_app, name="settings")
settings_app.add_typer(authenticator_app, name="authenticator-app")
app.add_typer(audit_app, name="audit")
app.add_typer(token_app, name="token")
app.add_typer(simulator_app, name="simulator")
app.add_typer(access_app, name="access")
app.add_typer(keys_app, name="keys")
app.add_typer(oidc_app, name="oidc")
app.add_typer(saml_app, name="saml")
app.command()(serve)
app.command()(demo)
app.command()(doctor)


@app.callback()
def global_options(ctx: typer.Context, config: ConfigFileOption = None) -> None:
    remember_global_options(ctx, config)


@app.command()
def version() -> None:
    """Print the twofa version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
