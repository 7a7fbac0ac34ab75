"""Remembered devices: labels, the per-user cap, expiry, and whose device it is."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.services.conftest import BROWSER
from twofa.clock import FrozenClock
from twofa.domain.client import NO_CLIENT
from twofa.services.runtime import Gateway
from twofa.services.second_factor.outcomes import Completion
from twofa.services.settings.two_factor import TwoFactorConfig
from twofa.services.signin.remembered_devices import MAX_PER_USER, device_label
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.repositories import Users


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "Firefox on Linux",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0 Safari/537.36 Edg/120.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Safari on iPhone",
        ),
        ("curl/8.0", "Unknown browser"),
    ],
)
def test_device_label_names_browser_and_system(agent: str, label: str) -> None:
    assert device_label(agent) == label


async def password_session(gateway: Gateway, user_id: int) -> SessionView:
    _, anonymous = await gateway.sessions.open(NO_CLIENT)
    async with gateway.db.begin() as db:
        _, view = await gateway.sessions.promote(
            db, anonymous, user_id, Level.AWAITING_SECOND_FACTOR, BROWSER
        )
    return view


@pytest.fixture
async def alice(gateway: Gateway) -> int:
    await gateway.accounts.add_user("alice", "alice-password-1")
    await gateway.accounts.add_user("bob", "bob-password-1")
    await gateway.console.save_two_factor(TwoFactorConfig(remember_device_days=7), "t", NO_CLIENT)
    return await user_id(gateway, "alice")


def signed_in_with_a_second_factor(gateway: Gateway, user_id: int) -> Completion:
    """The sign-in a device is remembered for: one that has just passed a second factor."""
    view = SessionView("s", user_id, Level.SIGNED_IN, "csrf", "/", gateway.clock.now())
    return Completion("token", view)


async def test_a_sign_in_without_a_second_factor_remembers_no_device(
    gateway: Gateway, alice: int
) -> None:
    """A postponement or a Duo fail-open signs in on the password: it must not leave a device
    that later counts as a passed second factor."""
    view = SessionView("s", alice, Level.SIGNED_IN, "csrf", "/", None)
    assert await gateway.devices.remember(Completion("token", view), BROWSER) is None
    assert await gateway.devices.of_user(alice) == []


async def user_id(gateway: Gateway, username: str) -> int:
    async with gateway.db.begin() as db:
        user = await Users(db).by_name(username)
    assert user is not None
    return user.id


async def test_a_user_keeps_at_most_the_cap_newest_first_out(
    gateway: Gateway, alice: int, clock: FrozenClock
) -> None:
    tokens = []
    for _ in range(MAX_PER_USER + 2):
        remembered = await gateway.devices.remember(
            signed_in_with_a_second_factor(gateway, alice), BROWSER
        )
        assert remembered is not None
        tokens.append(remembered[0])
        clock.advance(timedelta(seconds=1))

    assert len(await gateway.devices.of_user(alice)) == MAX_PER_USER
    oldest = await gateway.devices.skip_second_factor(
        await password_session(gateway, alice), tokens[0], BROWSER
    )
    newest = await gateway.devices.skip_second_factor(
        await password_session(gateway, alice), tokens[-1], BROWSER
    )
    assert oldest is None
    assert newest is not None
    assert newest.session.level is Level.SIGNED_IN


async def test_a_device_expires_after_the_admins_days(
    gateway: Gateway, alice: int, clock: FrozenClock
) -> None:
    remembered = await gateway.devices.remember(
        signed_in_with_a_second_factor(gateway, alice), BROWSER
    )
    assert remembered is not None
    assert remembered[1] == 7
    clock.advance(timedelta(days=7, seconds=1))

    session = await password_session(gateway, alice)
    assert await gateway.devices.skip_second_factor(session, remembered[0], BROWSER) is None


async def test_another_users_device_token_does_not_sign_in(gateway: Gateway, alice: int) -> None:
    remembered = await gateway.devices.remember(
        signed_in_with_a_second_factor(gateway, alice), BROWSER
    )
    assert remembered is not None
    bob_session = await password_session(gateway, await user_id(gateway, "bob"))

    assert await gateway.devices.skip_second_factor(bob_session, remembered[0], BROWSER) is None
