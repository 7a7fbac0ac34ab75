"""Backup codes: ten single-use codes for the day the phone is lost. They are shown once (the
page, a download and a print view while the enrolment draft is open) and stored only as slow
hashes; a code that signs someone in is marked used by the service's conditional UPDATE, so
two sign-ins racing with one code cannot both succeed.

Codes are 10 characters of Crockford's base32 (50 random bits), shown as `XXXXX-XXXXX`. The
alphabet has no I, L, O or U, and typing those letters is forgiven (O reads as 0, I and L as
1), as are spaces, dashes and lower case.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from twofa.methods.base import (
    Draft,
    EnrolmentRefused,
    MethodContext,
    MethodKind,
    NewCredential,
    NewItem,
    Prompt,
    ResponseRejected,
    StoredCredential,
    StoredItem,
    Verified,
    normalise_code,
)
from twofa.security.code_hashing import Hasher, hash_code, verify_code

CODE: Final = "backup_codes"
CODE_COUNT: Final = 10
CODE_LENGTH: Final = 10
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: 5 bits a character
BITS_PER_CODE: Final = CODE_LENGTH * 5
# Crockford's decoding rules: letters people confuse with digits read as those digits.
_LOOK_ALIKES: Final = str.maketrans({"O": "0", "I": "1", "L": "1"})
SAVED_FIELD: Final = "saved"
NOT_SAVED_MESSAGE: Final = (
    "Confirm that you saved the codes (tick “I have saved these codes”): they are shown only once."
)


def new_code() -> str:
    """One code as stored and compared: 10 characters, no separator."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def formatted(code: str) -> str:
    """As printed for people: two groups of five."""
    half = CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalise_backup_code(raw: str) -> str:
    """A code as typed (any case, spaces, dashes, O for 0) in its stored form."""
    return normalise_code(raw).translate(_LOOK_ALIKES)


def is_well_formed(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(ch in ALPHABET for ch in code)


def _hash_all(codes: Sequence[str]) -> list[str]:
    return [hash_code(code) for code in codes]


def _matching_item(
    credentials: Sequence[StoredCredential], code: str
) -> tuple[StoredCredential, StoredItem] | None:
    """The unused item this code opens, and its credential. Used items are never checked: a
    used code is as wrong as a made-up one."""
    for credential in credentials:
        for item in credential.items:
            if not item.used and verify_code(item.digest, code):
                return credential, item
    return None


class BackupCodesMethod:
    """Generating again replaces the whole set (one credential per user): the old codes stop
    working the moment the new ones are confirmed. Every hash runs in `hasher` (the gateway's
    hashing pool), as one job per request: the ten hashes of a new set, or every unused code a
    typed one is compared with."""

    code = CODE
    title = "Backup codes"
    kind = MethodKind.CODE
    many_per_user = False
    checks_slowly = True
    challenge_seconds = 300

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher

    async def begin_enrolment(
        self, context: MethodContext, enrolled: Sequence[StoredCredential] = ()
    ) -> Draft:
        codes = [new_code() for _ in range(CODE_COUNT)]
        digests = await self._hasher.run(_hash_all, codes)
        shown = [formatted(code) for code in codes]
        # The plaintext lives only in the sealed draft secret (for the download and print
        # views) until the draft expires; what is kept in the clear is already hashed.
        return Draft(show={"codes": shown}, keep={"digests": digests}, secret="\n".join(shown))

    async def finish_enrolment(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        secret: str | None,
        response: Mapping[str, str],
        enrolled: Sequence[StoredCredential] = (),
    ) -> NewCredential:
        if response.get(SAVED_FIELD) != "on":
            raise EnrolmentRefused(NOT_SAVED_MESSAGE)
        digests = keep.get("digests")
        if (
            not isinstance(digests, list)
            or len(digests) != CODE_COUNT
            or not all(isinstance(digest, str) and digest for digest in digests)
        ):
            raise ResponseRejected("enrolment draft has no code digests")
        items = tuple(
            NewItem(slot=str(number), digest=digest)
            for number, digest in enumerate(digests, start=1)
        )
        return NewCredential(label=self.title, items=items)

    async def start(
        self, context: MethodContext, credentials: Sequence[StoredCredential]
    ) -> Prompt:
        return Prompt(show={})

    async def verify(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        credentials: Sequence[StoredCredential],
        response: Mapping[str, str],
    ) -> Verified:
        code = normalise_backup_code(response.get("code", ""))
        if not is_well_formed(code):
            raise ResponseRejected("malformed backup code")
        found = await self._hasher.run(_matching_item, credentials, code)
        if found is None:
            raise ResponseRejected("wrong or already used backup code")
        credential, item = found
        return Verified(credential.id, use_item=item.id)
