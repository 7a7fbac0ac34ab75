"""The one decision both protocols ask (services.idp.admission): sign in first (again, when
the sign-in is not later than the request allows), a second factor first, or admitted with
the user's facts; passive requests raise instead of asking; a disabled user and one the
application does not admit are refused, and the refusal is audited."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.unit.services.conftest import BROWSER, add_user, audit_rows, sign_in
from twofa.clock import FrozenClock
from twofa.services.idp.admission import (
    AdmissionService,
    Admitted,
    InteractionNeeded,
    NotAdmitted,
    SecondFactorFirst,
    SignInFirst,
)
from twofa.services.idp.applications import Application, NewApplication
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import SessionView
from twofa.storage.tables import UserRow


async def app_with(gateway: Gateway, **fields: object) -> Application:
    new = NewApplication("App", ["https://app.example.com/cb"], **fields)  # type: ignore[arg-type]
    return (await gateway.applications.add(new, actor="cli")).application


async def bob(gateway: Gateway) -> SessionView:
    await add_user(gateway, "bob")
    outcome = await sign_in(gateway, "bob")
    assert outcome.session is not None
    return outcome.session


def admission(gateway: Gateway) -> AdmissionService:
    return AdmissionService(gateway.db, gateway.clock)


async def test_no_session_signs_in_first_and_a_passive_request_raises(gateway: Gateway) -> None:
    app = await app_with(gateway, second_factor_required=False)
    decided = await admission(gateway).decide(app, None, kind="t", client=BROWSER)
    assert decided == SignInFirst(fresh=False)
    with pytest.raises(InteractionNeeded) as needed:
        await admission(gateway).decide(app, None, kind="t", client=BROWSER, passive=True)
    assert needed.value.kind == "login"


async def test_a_sign_in_not_later_than_asked_signs_in_again(
    gateway: Gateway, clock: FrozenClock
) -> None:
    app = await app_with(gateway, second_factor_required=False)
    session = await bob(gateway)
    clock.advance(timedelta(seconds=5))
    fresh = await admission(gateway).decide(
        app, session, kind="t", client=BROWSER, signed_in_after=clock.now()
    )
    assert fresh == SignInFirst(fresh=True)
    earlier = clock.now() - timedelta(minutes=1)
    later = await admission(gateway).decide(
        app, session, kind="t", client=BROWSER, signed_in_after=earlier
    )
    assert isinstance(later, Admitted)


async def test_a_password_only_session_passes_a_second_factor_first(gateway: Gateway) -> None:
    app = await app_with(gateway)  # second factor required: the default
    session = await bob(gateway)
    assert await admission(gateway).decide(app, session, kind="t", client=BROWSER) == (
        SecondFactorFirst()
    )
    with pytest.raises(InteractionNeeded) as needed:
        await admission(gateway).decide(app, session, kind="t", client=BROWSER, passive=True)
    assert needed.value.kind == "second_factor"


async def test_admitted_carries_the_user_facts_and_is_audited(gateway: Gateway) -> None:
    app = await app_with(gateway, second_factor_required=False)
    session = await bob(gateway)
    decided = await admission(gateway).decide(app, session, kind="saml_sso", client=BROWSER)
    assert isinstance(decided, Admitted)
    user = decided.user
    assert (user.username, user.display_name, user.groups) == ("bob", "Bob", ())
    assert user.amr == ("pwd",)
    assert user.second_factor is False
    [row] = await audit_rows(gateway, "saml_sso")
    assert (row.outcome, row.detail["application"]) == ("allow", "App")


async def test_a_user_not_admitted_or_disabled_is_refused_and_audited(gateway: Gateway) -> None:
    finance = await app_with(gateway, allowed_groups=["finance"], second_factor_required=False)
    session = await bob(gateway)
    with pytest.raises(NotAdmitted) as refused:
        await admission(gateway).decide(finance, session, kind="saml_sso", client=BROWSER)
    assert refused.value.disabled is False
    everyone = dataclasses.replace(finance, allowed_groups=())
    async with gateway.db.begin() as db:
        await db.execute(update(UserRow).where(UserRow.username == "bob").values(enabled=False))
    with pytest.raises(NotAdmitted) as disabled:
        await admission(gateway).decide(everyone, session, kind="saml_sso", client=BROWSER)
    assert disabled.value.disabled is True
    reasons = [row.detail["reason"] for row in await audit_rows(gateway, "saml_sso")]
    assert reasons == ["not allowed", "disabled"]
