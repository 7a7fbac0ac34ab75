"""Duo's error envelope on the simulator side: one exception, mapped to JSON in one place.

The HTTP status is always the first three digits of Duo's code (40002 → 400), as observed.
"""

from __future__ import annotations

from typing import Final

MISSING_CREDENTIALS: Final = 40101
INVALID_IKEY: Final = 40102
INVALID_SIGNATURE: Final = 40103


class DuoFailure(Exception):
    """A request Duo would refuse; becomes `{"stat": "FAIL", "code", "message", ...}`."""

    def __init__(self, code: int, message: str, detail: str | None = None) -> None:
        self.code = code
        self.message = message
        self.detail = detail
        super().__init__(f"{code} {message}" + (f" ({detail})" if detail else ""))

    @property
    def http_status(self) -> int:
        return self.code // 100

    def envelope(self) -> dict[str, object]:
        body: dict[str, object] = {"stat": "FAIL", "code": self.code, "message": self.message}
        if self.detail is not None:
            body["message_detail"] = self.detail
        return body


def missing_parameter(name: str) -> DuoFailure:
    return DuoFailure(40001, "Missing required request parameters", name)


def invalid_parameter(detail: str) -> DuoFailure:
    return DuoFailure(40002, "Invalid request parameters", detail)


def missing_credentials(detail: str | None = None) -> DuoFailure:
    return DuoFailure(MISSING_CREDENTIALS, "Missing request credentials", detail)


def invalid_signature(detail: str | None = None) -> DuoFailure:
    return DuoFailure(INVALID_SIGNATURE, "Invalid signature in request credentials", detail)


def not_found() -> DuoFailure:
    return DuoFailure(40401, "Resource not found")
