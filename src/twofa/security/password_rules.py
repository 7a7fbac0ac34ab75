"""What a local user's new password must be, wherever it is set (console, API, CLI, import):
at least 12 characters, not the username, and not one of the most common passwords shipped
with the package (`common_passwords.txt`, compared without regard to case). Guessing is
throttled online, but a stolen database is guessed offline, where only a rare password holds.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final

MIN_PASSWORD_LENGTH: Final = 12
_COMMON_PASSWORDS_FILE: Final = "common_passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list, lower case; read once, at the first password set."""
    text = files("twofa.security").joinpath(_COMMON_PASSWORDS_FILE).read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def password_problem(password: str, username: str) -> str | None:
    """Why `password` cannot be `username`'s new password, in words for whoever typed it;
    None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters, this one has {len(password)}"
    folded = password.casefold()
    if username and folded == username.strip().casefold():
        return "the password cannot be the username"
    if folded in common_passwords():
        return "this is one of the most common passwords: choose one nobody would guess"
    return None
