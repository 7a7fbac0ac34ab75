"""`twofa access explain`: which access rule decides a URL for a user, and what follows."""

from __future__ import annotations

from typing import Annotated

import typer

from twofa.cli.common import run_with_gateway
from twofa.services.forward_auth import Explanation
from twofa.services.runtime import Gateway

access_app = typer.Typer(help="Access rules for the protected applications.", no_args_is_help=True)

OUTCOMES = {
    "bypass": "let through without signing in",
    "one_factor": "needs a signed-in session",
    "two_factor": "needs a signed-in session that passed a second factor",
    "deny": "refused (403)",
}


@access_app.command("explain")
def explain(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The URL as the browser asks for it.")],
    user: Annotated[
        str | None, typer.Option("--user", help="Decide for this user (default: not signed in).")
    ] = None,
    ip: Annotated[str, typer.Option(help="The client's address.")] = "203.0.113.1",
) -> None:
    """Show which rule matches USER at URL, and what twofa answers."""

    async def ask(gateway: Gateway) -> Explanation:
        return await gateway.forward_auth.explain(user, url, ip)

    answer = run_with_gateway(ctx, ask)
    if not answer.protected:
        typer.echo("host: not a protected domain ([access] domains): every request refused")
    who = f"{user} (groups: {', '.join(answer.groups) or 'none'})" if user else "not signed in"
    typer.echo(f"user: {who}")
    if answer.rule is None:
        typer.echo("rule: none matches; the default policy applies")
    else:
        rule = answer.rule
        typer.echo(f"rule: #{(answer.decision.rule or 0) + 1}: domain {', '.join(rule.domain)}")
        for label, values in (
            ("resources", rule.resources),
            ("users", rule.users),
            ("groups", rule.groups),
            ("networks", tuple(str(n) for n in rule.networks)),
        ):
            if values:
                typer.echo(f"  {label}: {', '.join(values)}")
    policy = answer.decision.policy.value
    typer.echo(f"policy: {policy}: {OUTCOMES[policy]}")
    if answer.decision.needs_identity:
        typer.echo("note: this rule names users or groups: sign-in first, then decided again")
