"""The name authenticator apps list a key under (the `issuer` method option): what a set-up
hands the app, and which names are refused because apps would show them wrongly."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from twofa.methods.base import MethodContext, MethodUser
from twofa.methods.totp import (
    DEFAULT_ISSUER,
    ISSUER_OPTION,
    TotpMethod,
    issuer_from_options,
    issuer_problem,
)

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def set_up_uri_parts(uri: str) -> tuple[str, str]:
    """The label (`issuer:account`) and the `issuer` parameter of an `otpauth://` URI."""
    parsed = urllib.parse.urlparse(uri)
    issuer = urllib.parse.parse_qs(parsed.query)["issuer"][0]
    return urllib.parse.unquote(parsed.path.lstrip("/")), issuer


async def set_up_with(options: Mapping[str, object]) -> dict[str, object]:
    context = MethodContext(MethodUser(7, "alice", "Alice", "alice@example.com"), NOW, options)
    return dict((await TotpMethod().begin_enrolment(context)).show)


async def test_the_admins_name_is_in_the_label_and_the_issuer_parameter() -> None:
    show = await set_up_with({ISSUER_OPTION: "Acme Jira"})

    assert show["issuer"] == "Acme Jira"
    assert isinstance(show["uri"], str)
    assert set_up_uri_parts(show["uri"]) == ("Acme Jira:alice", "Acme Jira")


async def test_without_a_name_the_product_name_is_used() -> None:
    show = await set_up_with({})
    assert show["issuer"] == DEFAULT_ISSUER == "twofa"


@pytest.mark.parametrize("stored", ["Acme:Jira", "", 42, None, " padded "])
def test_a_stored_name_apps_would_mangle_falls_back_to_the_product_name(stored: object) -> None:
    """A value written around the console (by hand in the database) cannot break the QR code."""
    assert issuer_from_options({ISSUER_OPTION: stored}) == DEFAULT_ISSUER


@pytest.mark.parametrize("name", ["Acme", "Acme Jira (prod)", "Zürich Bank", "x" * 40, "a-b_c.d/e"])
def test_plain_names_pass(name: str) -> None:
    assert issuer_problem(name) is None


@pytest.mark.parametrize("name", ["", "x" * 41, " Acme", "Acme:Jira", "Acme\nJira", "Acme\x00"])
def test_names_apps_would_show_wrongly_are_refused(name: str) -> None:
    assert issuer_problem(name) is not None
