"""Duo Auth API v2: request signing, an async client and its typed results.

This package imports nothing else from twofa, so it could be published on its own.
"""

from twofa.duo.client import AuthRequest, DuoAuthClient, DuoCredentials, DuoTimeouts
from twofa.duo.endpoint import (
    CustomHostRefused,
    DuoEndpoint,
    InvalidEndpoint,
    make_http_client,
)
from twofa.duo.errors import (
    DuoApiError,
    DuoError,
    DuoMalformedResponse,
    DuoRateLimited,
    DuoServerError,
    DuoTimeout,
    DuoTransportError,
    DuoUnavailable,
)

__all__ = [
    "AuthRequest",
    "CustomHostRefused",
    "DuoApiError",
    "DuoAuthClient",
    "DuoCredentials",
    "DuoEndpoint",
    "DuoError",
    "DuoMalformedResponse",
    "DuoRateLimited",
    "DuoServerError",
    "DuoTimeout",
    "DuoTimeouts",
    "DuoTransportError",
    "DuoUnavailable",
    "InvalidEndpoint",
    "make_http_client",
]
