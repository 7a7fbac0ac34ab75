"""What a local user's new password must be, wherever it is set (console, API, CLI, import):
at least 12 characters, of which at least 5 different ones, not digits and symbols alone; not
the username, nor the username with digits or symbols added;
and not one of the most common passwords shipped with the package (`common_passwords.txt`),
nor one of them with digits, spaces or punctuation added at the end. Compared in one folded
form (compatibility forms and case folded, spaces and invisible characters dropped), so
`password1234` in full-width letters, or `password` with four zero-width spaces, is caught.
Guessing is throttled online, but a stolen database is guessed offline, where only a rare
password holds.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib.resources import files
from typing import Final

MIN_PASSWORD_LENGTH: Final = 12
MIN_DISTINCT_CHARACTERS: Final = 5
_DECORATION: Final = re.compile(r"[\d\W_]+$")  # what people add to a word to pass a rule
_COMMON_PASSWORDS_FILE: Final = "common_passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list, lower case; read once, at the first password set."""
    text = files("twofa.security").joinpath(_COMMON_PASSWORDS_FILE).read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def folded(text: str) -> str:
    """One form for comparing: compatibility forms (full-width letters), case, and no
    spaces or invisible characters (zero-width spaces, joiners)."""
    normal = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in normal if not ch.isspace() and unicodedata.category(ch) != "Cf")


def password_problem(password: str, username: str) -> str | None:
    """Why `password` cannot be `username`'s new password, in words for whoever typed it;
    None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters, this one has {len(password)}"
    word = folded(password)
    if len(set(word)) < MIN_DISTINCT_CHARACTERS:
        return f"use at least {MIN_DISTINCT_CHARACTERS} different characters"
    base = _DECORATION.sub("", word)  # the word without what was added at its end
    if not base:
        return "add letters: digits and symbols alone are guessed first"
    name = folded(username)
    if name and name in (word, base):
        return "the password cannot be the username"
    common = common_passwords()
    if word in common or base in common:
        return "this is one of the most common passwords: choose one nobody would guess"
    return None
