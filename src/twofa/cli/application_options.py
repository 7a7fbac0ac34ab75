"""The options `twofa oidc client add` and `twofa saml sp add` share: who may use the
application and whether it needs a second factor, written once so both say the same."""

from __future__ import annotations

from typing import Annotated

import typer

AllowedUsers = Annotated[
    list[str] | None, typer.Option("--user", help="Allow this user (repeatable).")
]
AllowedGroups = Annotated[
    list[str] | None, typer.Option("--group", help="Allow this group's members (repeatable).")
]
SecondFactorRequired = Annotated[
    bool,
    typer.Option(
        "--second-factor/--no-second-factor",
        help="Whether a sign-in to it needs a second factor (default: yes).",
    ),
]
