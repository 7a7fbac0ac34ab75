"""Injected latency and errors, so reliability tests can make the simulator slow or failing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from twofa.simulator.errors import DuoFailure

FAULT_STATUSES: Final = {
    401: DuoFailure(40103, "Invalid signature in request credentials"),  # as a wrong key or clock
    429: DuoFailure(42901, "Too Many Requests"),
    500: DuoFailure(50001, "Internal server error"),
    502: DuoFailure(50201, "Bad gateway"),
    503: DuoFailure(50301, "Service unavailable"),
}


def endpoint_name(path_or_name: str) -> str:
    """`/auth/v2/auth_status` and `auth_status` name the same endpoint."""
    return path_or_name.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class FaultPlan:
    """Applies to the next `remaining` matching requests (None: until cleared)."""

    endpoints: frozenset[str]
    latency_ms: int = 0
    status: int | None = None
    remaining: int | None = None

    @classmethod
    def build(
        cls,
        endpoints: Iterable[str],
        latency_ms: int,
        status: int | None,
        count: int | None,
    ) -> FaultPlan:
        if status is not None and status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {sorted(FAULT_STATUSES)}")
        if latency_ms < 0 or (count is not None and count < 1):
            raise ValueError("latency_ms must be >= 0 and count >= 1")
        return cls(frozenset(map(endpoint_name, endpoints)), latency_ms, status, count)

    def take(self, endpoint: str) -> bool:
        """True when this request is affected; counts it down."""
        if self.endpoints and endpoint_name(endpoint) not in self.endpoints:
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        return True

    @property
    def failure(self) -> DuoFailure | None:
        return FAULT_STATUSES[self.status] if self.status is not None else None

    def to_json(self) -> dict[str, object]:
        return {
            "endpoints": sorted(self.endpoints),
            "latency_ms": self.latency_ms,
            "status": self.status,
            "remaining": self.remaining,
        }
