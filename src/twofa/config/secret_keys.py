"""The gateway's secret (`secret_key`, usually `TWOFA_SECRET_KEY_FILE`) read as a list of keys,
one a line, newest first, so that a new key can be added before the old one is retired
(`twofa keys rotate`). Blank lines and `#` comments are skipped; a one-line secret is one key,
as it always was.
"""

from __future__ import annotations

from typing import Final

MIN_KEY_LENGTH: Final = 32


def secret_keys(secret: str) -> tuple[str, ...]:
    """The keys in `secret`, newest first, each stripped of surrounding spaces."""
    lines = (line.strip() for line in secret.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def secret_key_problems(secret: str, *, refused: frozenset[str] = frozenset()) -> list[str]:
    """Everything wrong with the keys, at once, naming keys by their line order (never by
    their value, which would put a secret in a log); `refused` are keys never accepted (the
    development placeholder in production)."""
    keys = secret_keys(secret)
    if not keys:
        return [f"no key: give at least one line of {MIN_KEY_LENGTH} characters or more"]
    many = len(keys) > 1
    problems: list[str] = []
    for number, key in enumerate(keys, start=1):
        name = f"key {number} of {len(keys)}" if many else "the key"
        if len(key) < MIN_KEY_LENGTH:
            problems.append(
                f"{name} has {len(key)} characters; each key must be at least {MIN_KEY_LENGTH}"
            )
        if key in refused:
            problems.append(f"{name} is the development placeholder; set TWOFA_SECRET_KEY_FILE")
    seen: dict[str, int] = {}
    for number, key in enumerate(keys, start=1):
        if key in seen:
            problems.append(f"keys {seen[key]} and {number} are the same: list each key once")
        seen.setdefault(key, number)
    return problems
