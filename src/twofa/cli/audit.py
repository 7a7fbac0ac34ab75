"""`twofa audit`: (to be filled in)."""

from __future__ import annotations

import typer

audit_app = typer.Typer(help="(to be filled in)", no_args_is_help=True)
