"""The root of twofa's own error tree. Each layer raises its subclasses; the web and CLI edges
map them to a status, a page or an exit code in one place.
"""

from __future__ import annotations


class TwofaError(Exception):
    """Base of every error twofa raises on purpose."""


class ConfigurationError(TwofaError):
    """Settings are missing or invalid; the message lists every problem found."""
