"""`twofa access explain`: which access rule decides a URL for a user, and what follows; and
`twofa access rules …`: the console's access rules (list, add, edit, remove, move). The
settings file's rules are listed too, read-only: they are evaluated first."""

from __future__ import annotations

from typing import Annotated, Final

import typer

from twofa.cli.common import echo_json, render_table, run_with_gateway
from twofa.cli.settings_cmd import CLI_ACTOR, run_edit
from twofa.config import AccessRuleSettings
from twofa.domain.access import RuleSet
from twofa.domain.client import CLI
from twofa.services.access.forward_auth import Explanation
from twofa.services.access.rules import ConsoleRule, RuleEdit, rule_fields
from twofa.services.idp.admission import AdmissionExplanation
from twofa.services.runtime import Gateway

access_app = typer.Typer(help="Access rules for the protected applications.", no_args_is_help=True)
rules_app = typer.Typer(
    help="The console's access rules (after the settings file's, which come first).",
    no_args_is_help=True,
)
access_app.add_typer(rules_app, name="rules")

OUTCOMES = {
    "bypass": "let through without signing in",
    "one_factor": "needs a signed-in session",
    "two_factor": "needs a signed-in session that passed a second factor",
    "deny": "refused (403)",
}


@access_app.command("explain")
def explain(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Argument(help="The URL as the browser asks for it.", show_default=False)
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Decide for this user (default: not signed in).")
    ] = None,
    ip: Annotated[str, typer.Option(help="The client's address.")] = "203.0.113.1",
    application: Annotated[
        str | None,
        typer.Option(
            "--application",
            help="Instead of a URL: whether --user may sign in to this application (an OIDC "
            "client or SAML provider, by name or client id), and which of its rules decides.",
        ),
    ] = None,
) -> None:
    """Show which rule matches USER at URL, and what twofa answers; or, with --application,
    which of the application's rules decides whether USER may sign in to it."""
    if application is not None:
        if user is None or url is not None:
            raise typer.BadParameter("--application takes --user and no URL")
        _explain_application(ctx, application, user)
        return
    if url is None:
        raise typer.BadParameter("give the URL to decide (or --application and --user)")
    checked_url = url

    async def ask(gateway: Gateway) -> Explanation:
        return await gateway.forward_auth.explain(user, checked_url, ip)

    answer = run_with_gateway(ctx, ask)
    if not answer.protected:
        typer.echo("host: not a protected domain ([access] domains): every request refused")
    who = f"{user} (groups: {', '.join(answer.groups) or 'none'})" if user else "not signed in"
    typer.echo(f"user: {who}")
    if answer.rule is None:
        typer.echo("rule: none matches; the default policy applies")
    else:
        rule = answer.rule
        where = f" ({answer.origin.label})" if answer.origin else ""
        number = (answer.decision.rule or 0) + 1
        typer.echo(f"rule: #{number}{where}: domain {', '.join(rule.domain)}")
        _echo_subjects(rule.resources, rule.users, rule.groups, tuple(map(str, rule.networks)))
    policy = answer.decision.policy.value
    typer.echo(f"policy: {policy}: {OUTCOMES[policy]}")
    if answer.decision.needs_identity:
        typer.echo("note: this rule names users or groups: sign-in first, then decided again")


def _echo_subjects(*values: tuple[str, ...]) -> None:
    for label, listed in zip(("resources", "users", "groups", "networks"), values, strict=True):
        if listed:
            typer.echo(f"  {label}: {', '.join(listed)}")


APPLICATION_REFUSALS: Final = {
    "gone": "no such user: refused",
    "disabled": "the account is disabled: refused",
    "not allowed": "not among the users and groups the application admits: refused",
}


def _explain_application(ctx: typer.Context, application: str, username: str) -> None:
    async def ask(gateway: Gateway) -> AdmissionExplanation:
        return await gateway.explain_admission(application, username)

    answer = run_with_gateway(ctx, ask)
    app = answer.application
    typer.echo(f"application: {app.name} ({app.protocol}, client id {app.client_id})")
    typer.echo(f"user: {answer.username} (groups: {', '.join(answer.groups) or 'none'})")
    if answer.decision is not None:
        number = (answer.decision.rule or 0) + 1
        typer.echo(f"rule: #{number} of the application's" if answer.rule else "rule: none")
        if answer.rule is not None:
            _echo_subjects((), answer.rule.users, answer.rule.groups, ())
    if answer.refusal is not None:
        typer.echo(f"decision: {APPLICATION_REFUSALS[answer.refusal]}")
        return
    assert answer.decision is not None
    policy = answer.decision.policy.value
    typer.echo(f"decision: may sign in; policy {policy}: {OUTCOMES[policy]}")


RULE_OPTIONS: Final = {
    "domains": "--domain",
    "policy": "--policy",
    "paths": "--path",
    "users": "--user",
    "groups": "--group",
    "networks": "--network",
}
DomainOption = Annotated[
    list[str], typer.Option("--domain", help="A protected domain or *.domain (repeatable).")
]
PolicyOption = Annotated[str, typer.Option(help="bypass, one_factor, two_factor or deny.")]
PathOption = Annotated[
    list[str] | None, typer.Option("--path", help="A path pattern, e.g. /rest/* (repeatable).")
]
UserOption = Annotated[list[str] | None, typer.Option("--user", help="Only for this user.")]
GroupOption = Annotated[list[str] | None, typer.Option("--group", help="Only for this group.")]
NetworkOption = Annotated[
    list[str] | None, typer.Option("--network", help="Only from this network, e.g. 10.0.0.0/8.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _rule_row(number: int, source: str, rule: AccessRuleSettings) -> list[str]:
    return [
        str(number),
        source,
        ", ".join(rule.domain),
        ", ".join(rule.resources) or "all",
        ", ".join((*rule.users, *rule.groups)) or "anyone",
        ", ".join(str(network) for network in rule.networks) or "any",
        rule.policy,
    ]


@rules_app.command("list")
def list_rules(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every rule in the order they are evaluated: the file's, then the console's."""

    async def read(gateway: Gateway) -> RuleSet:
        return await gateway.access_rules.rule_set()

    rule_set = run_with_gateway(ctx, read)
    pairs = list(zip(rule_set.origins, rule_set.written, strict=True))
    if as_json:
        echo_json(
            [
                {
                    "source": o.source.value,
                    "position": o.position,
                    "id": o.rule_id,
                    **rule_fields(r),
                }
                for o, r in pairs
            ]
        )
        return
    if not pairs:
        typer.echo("no rules: the default policy applies to every request")
        return
    rows = [
        _rule_row(number, "file" if o.rule_id is None else f"console id {o.rule_id}", r)
        for number, (o, r) in enumerate(pairs, start=1)
    ]
    headers = ["#", "source", "domains", "paths", "users/groups", "networks", "policy"]
    typer.echo(render_table(headers, rows))


def _edit(
    domains: list[str],
    policy: str,
    paths: list[str] | None,
    users: list[str] | None,
    groups: list[str] | None,
    networks: list[str] | None,
) -> RuleEdit:
    return RuleEdit(
        domains=tuple(domains),
        policy=policy,
        paths=tuple(paths or ()),
        users=tuple(users or ()),
        groups=tuple(groups or ()),
        networks=tuple(networks or ()),
    )


def _echo_saved(verb: str, saved: ConsoleRule) -> None:
    typer.echo(f"{verb} console rule id {saved.id} at console position {saved.position}")


@rules_app.command("add")
def add_rule(
    ctx: typer.Context,
    domain: DomainOption,
    policy: PolicyOption,
    path: PathOption = None,
    user: UserOption = None,
    group: GroupOption = None,
    network: NetworkOption = None,
    position: Annotated[
        int | None, typer.Option(help="Its place among the console's rules (default: last).")
    ] = None,
) -> None:
    """Add a console rule (last, or at --position)."""
    edit = _edit(domain, policy, path, user, group, network)

    async def add(gateway: Gateway) -> ConsoleRule:
        return await gateway.access_rules.add(edit, CLI_ACTOR, CLI, position)

    _echo_saved("added", run_edit(ctx, add, RULE_OPTIONS))


@rules_app.command("edit")
def edit_rule(
    ctx: typer.Context,
    rule_id: Annotated[int, typer.Argument(help="The console rule's id (see `rules list`).")],
    domain: DomainOption,
    policy: PolicyOption,
    path: PathOption = None,
    user: UserOption = None,
    group: GroupOption = None,
    network: NetworkOption = None,
) -> None:
    """Replace a console rule with the one given (it keeps its place)."""
    edit = _edit(domain, policy, path, user, group, network)

    async def update(gateway: Gateway) -> ConsoleRule:
        return await gateway.access_rules.update(rule_id, edit, CLI_ACTOR, CLI)

    _echo_saved("saved", run_edit(ctx, update, RULE_OPTIONS))


@rules_app.command("remove")
def remove_rule(
    ctx: typer.Context,
    rule_id: Annotated[int, typer.Argument(help="The console rule's id (see `rules list`).")],
) -> None:
    """Remove a console rule (the settings file's rules are edited in the file)."""

    async def remove(gateway: Gateway) -> None:
        await gateway.access_rules.remove(rule_id, CLI_ACTOR, CLI)

    run_with_gateway(ctx, remove)
    typer.echo(f"removed console rule id {rule_id}")


@rules_app.command("move")
def move_rule(
    ctx: typer.Context,
    rule_id: Annotated[int, typer.Argument(help="The console rule's id (see `rules list`).")],
    position: Annotated[int, typer.Argument(help="Its new place among the console's rules.")],
) -> None:
    """Move a console rule to POSITION (1 = first console rule, after the file's rules)."""

    async def move(gateway: Gateway) -> list[ConsoleRule]:
        return await gateway.access_rules.move(rule_id, position, CLI_ACTOR, CLI)

    moved = run_with_gateway(ctx, move)
    found = next(rule for rule in moved if rule.id == rule_id)
    typer.echo(f"moved console rule id {rule_id} to console position {found.position}")
