"""Everything one simulator process knows: its settings, integrations, users and transactions."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twofa.simulator.faults import FaultPlan
from twofa.simulator.transactions import Transaction, TransactionBook
from twofa.simulator.users import UserDirectory


@dataclass(frozen=True)
class SimulatorSettings:
    """`api_hostname` is the host clients sign; the Host header is accepted too."""

    ikey: str
    skey: str
    api_hostname: str | None = None
    push_timeout_s: float = 60.0
    long_poll_hold_s: float = 20.0
    date_window_s: float = 300.0
    enrollment_valid_secs: int = 86400


@dataclass
class Integration:
    ikey: str
    skey: str
    name: str = "twofa"
    has_logo: bool = True


@dataclass
class SimulatorState:
    settings: SimulatorSettings
    clock: Callable[[], float] = time.time
    integrations: dict[str, Integration] = field(default_factory=dict)
    faults: FaultPlan | None = None

    def __post_init__(self) -> None:
        self.users = UserDirectory(self.clock)
        self.transactions = TransactionBook(
            self.clock, self.settings.push_timeout_s, on_allow=self._remember_device
        )
        self.reset()

    def reset(self) -> None:
        """Back to a fresh start: only the configured integration, no users, no faults."""
        self.users.clear()
        self.transactions.clear()
        self.faults = None
        self.integrations = {
            self.settings.ikey: Integration(self.settings.ikey, self.settings.skey)
        }

    def _remember_device(self, transaction: Transaction) -> None:
        """An approved login hands out a token that lets preauth answer `allow` next time."""
        user = self.users.by_name(transaction.username)
        if user is not None and transaction.trusted_device_token:
            user.trusted_device_tokens.add(transaction.trusted_device_token)

    def secrets_by_ikey(self) -> dict[str, str]:
        return {ikey: integration.skey for ikey, integration in self.integrations.items()}
