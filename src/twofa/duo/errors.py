"""The Duo client's error tree: every failure the client can raise is one of these.

Callers decide failmode from the class alone: `DuoUnavailable` (transport, timeout, 5xx, 429
after back-off, malformed answer) means "Duo could not be asked"; `DuoApiError` below 500 means
Duo answered and refused the request.
"""

from __future__ import annotations


class DuoError(Exception):
    """Base of everything the Duo client raises."""


class DuoUnavailable(DuoError):
    """Duo could not give an answer; failmode applies."""


class DuoTransportError(DuoUnavailable):
    """The request did not reach Duo or the answer did not come back (DNS, TLS, reset)."""


class DuoTimeout(DuoTransportError):
    """Duo did not answer within the configured timeout."""


class DuoMalformedResponse(DuoUnavailable):
    """Duo answered with something that is not its documented shape."""


class DuoApiError(DuoError):
    """Duo's error envelope: `{"stat": "FAIL", "code", "message", "message_detail"}`."""

    def __init__(self, *, http_status: int, code: int | None, message: str, detail: str | None):
        self.http_status = http_status
        self.code = code
        self.message = message
        self.detail = detail
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"Duo answered {http_status} code {code}: {message}{suffix}")

    @property
    def is_bad_credentials(self) -> bool:
        """40101/40102/40103: the integration key, secret key or signing is wrong."""
        return self.http_status == 401


class DuoServerError(DuoApiError, DuoUnavailable):
    """Duo answered 5xx: its own failure, so failmode applies."""


class DuoRateLimited(DuoApiError, DuoUnavailable):
    """Still 429 after the full back-off schedule."""
