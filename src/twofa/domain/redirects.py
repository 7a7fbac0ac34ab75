"""Where a user may be sent after signing in: a path on this gateway, or a URL on a host the
admin allowed or a protected domain (`*.example.com` patterns too). Everything else (other
hosts, scheme tricks, `//evil`, backslashes) goes home."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from twofa.domain.access import domain_matches

HOME = "/"


def safe_redirect(target: str | None, own_host: str, allowed_hosts: Iterable[str]) -> str:
    if not target or any(ch in target for ch in ("\\", "\r", "\n", "\t")) or len(target) > 2000:
        return HOME
    try:
        parsed = urllib.parse.urlsplit(target)
        host = (parsed.hostname or "").lower()
    except ValueError:  # a malformed host part ("http://[evil") is nowhere to go
        return HOME
    if not parsed.scheme and not parsed.netloc:
        return target if target.startswith("/") and not target.startswith("//") else HOME
    if parsed.scheme not in ("http", "https") or parsed.username or parsed.password:
        return HOME
    allowed = (own_host, *allowed_hosts)
    return target if any(domain_matches(pattern, host) for pattern in allowed) else HOME
