"""A gateway's second-factor services on a real database with a clock the suite moves, and
the "authenticators" that play the user's side of each method (an app computing TOTP codes,
a person reading their mailbox, a security key signing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from twofa.clock import FrozenClock
from twofa.config import Settings, load_settings
from twofa.domain.client import NO_CLIENT
from twofa.methods.base import Delivery
from twofa.methods.registry import DUO_PUSH
from twofa.security.sealing import Sealer
from twofa.services.runtime import Gateway
from twofa.services.second_factor.pipeline import SecondFactorService
from twofa.services.settings.two_factor import TwoFactorConfig
from twofa.services.state.sessions import SessionView

SECRET = "contract-secret-key-contract-secret-key-00"
USERNAME, PASSWORD = "carol", "carol-password-1"
START = datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC)


@dataclass
class Mailbox:
    """Captures what the e-mail method sends (the SMTP path has its own integration tests)."""

    messages: list[Delivery] = field(default_factory=list)

    async def send(self, delivery: Delivery) -> None:
        self.messages.append(delivery)


@dataclass
class Harness:
    gateway: Gateway
    second_factor: SecondFactorService
    clock: FrozenClock
    mailbox: Mailbox
    settings: Settings

    async def password_session(self) -> SessionView:
        """A new browser that passed carol's password: the second factor is next."""
        _, anonymous = await self.gateway.sessions.open(NO_CLIENT)
        outcome = await self.gateway.login.sign_in(anonymous, USERNAME, PASSWORD, NO_CLIENT)
        assert outcome.session is not None, outcome
        return outcome.session


class Authenticator(Protocol):
    """The user's side of one method, as the contract suite needs it."""

    code: str

    def enrolment_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]: ...

    def verification_response(
        self, show: Mapping[str, Any], harness: Harness
    ) -> dict[str, str]: ...

    def wrong_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]: ...


@asynccontextmanager
async def harness_on(database_url: str) -> AsyncIterator[Harness]:
    settings = load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url="http://localhost:8000",
    )
    clock = FrozenClock(START)
    gateway = await Gateway.start(settings, clock=clock)
    try:
        await gateway.accounts.add_user(USERNAME, PASSWORD, email="carol@example.com")
        await gateway.accounts.set_user_policy(USERNAME, True)
        codes = gateway.second_factor.registry.codes  # Duo Push first
        await gateway.console.save_two_factor(
            TwoFactorConfig(methods=codes, first_method=DUO_PUSH),
            "contract-suite",
            NO_CLIENT,
        )
        mailbox = Mailbox()
        factors = SecondFactorService(
            gateway.db,
            gateway.second_factor.registry,
            gateway.sessions,
            gateway.gate,
            clock,
            Sealer(SECRET),
            mailbox,
        )
        yield Harness(gateway, factors, clock, mailbox, settings)
    finally:
        await gateway.close()
