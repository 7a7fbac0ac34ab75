"""One-time codes sent by e-mail: a 6-digit code per challenge, valid for ten minutes, kept on
the server only as a salted HMAC. Enrolment proves the address by a first code; the address is
stored with the credential and every later code goes there. The service sends the message.

The address is the account's, unless the admin lets users choose it (the method option
`users_choose_address`): then enrolment first asks for one, prefilled with the account's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from twofa.errors import TwofaError
from twofa.methods.base import (
    Delivery,
    DetailsNeeded,
    Draft,
    EnrolmentRefused,
    MethodContext,
    MethodKind,
    NewCredential,
    Prompt,
    ResponseRejected,
    StoredCredential,
    Verified,
    normalise_code,
)

CODE: Final = "email_otp"
DIGITS: Final = 6
VALID_MINUTES: Final = 10
SALT_BYTES: Final = 16
NO_ADDRESS: Final = "Your account has no e-mail address. Ask your administrator to add one."
USERS_CHOOSE_ADDRESS: Final = "users_choose_address"  # the method option
NOT_AN_ADDRESS: Final = "That doesn't look like an e-mail address. Type it as name@example.com."
MAX_ADDRESS_LENGTH: Final = 254  # RFC 5321's limit on a path, less its angle brackets
# Deliberately narrower than RFC 5322: no quoted local parts, comments or spaces, ASCII only,
# a dotted domain. What passes is safe in a header and what real mailboxes look like.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def new_code() -> str:
    return str(secrets.randbelow(10**DIGITS)).zfill(DIGITS)


def code_digest(code: str, salt_hex: str) -> str:
    """A fast keyed hash is enough here: the code lives ten minutes, the salt is random per
    challenge and never leaves the server, and five wrong tries lock the method."""
    return hmac.new(bytes.fromhex(salt_hex), code.encode("ascii"), hashlib.sha256).hexdigest()


def kept_code(code: str) -> dict[str, str]:
    salt = secrets.token_hex(SALT_BYTES)
    return {"salt": salt, "digest": code_digest(code, salt)}


def code_matches(keep: Mapping[str, Any], typed: str) -> bool:
    code = normalise_code(typed)
    salt, digest = keep.get("salt"), keep.get("digest")
    if not (isinstance(salt, str) and isinstance(digest, str)):
        return False
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return False
    return hmac.compare_digest(code_digest(code, salt), digest)


def users_choose_address(options: Mapping[str, Any]) -> bool:
    return options.get(USERS_CHOOSE_ADDRESS) is True


def checked_address(typed: str) -> str:
    """The address a user typed, trimmed, or `DetailsNeeded` saying what to fix."""
    address = typed.strip()
    local = address.rpartition("@")[0]
    if len(address) > MAX_ADDRESS_LENGTH or len(local) > 64 or not _ADDRESS.fullmatch(address):
        raise DetailsNeeded(_address_form(typed[:MAX_ADDRESS_LENGTH]), NOT_AN_ADDRESS)
    return address


def _address_form(prefill: str) -> dict[str, Any]:
    return {"ask_address": True, "address": prefill, "minutes": VALID_MINUTES}


def mask_address(address: str) -> str:
    """`alice@example.com` as `a***e@example.com`: enough for the user to recognise it, not
    enough for someone at their screen to learn it."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    shown = local[0] + "***" + (local[-1] if len(local) > 2 else "") if local else "***"
    return f"{shown}@{domain}" if at else shown


def code_message(address: str, code: str, purpose: str) -> Delivery:
    body = (
        f"Your verification code is: {code}\n"
        "\n"
        f"Use it to {purpose}. It is valid for {VALID_MINUTES} minutes and works once.\n"
        "\n"
        "If this wasn't you, someone may know your password: change your password now.\n"
        "Never share this code; nobody from IT will ask you for it.\n"
    )
    return Delivery(to=address, subject="Your verification code", body=body)


class EmailOtpMethod:
    """A code sent to the user's e-mail address. Weaker than an app or a key (mail can be
    read elsewhere), which is why admins tend to offer it as a backup."""

    code = CODE
    title = "Code by e-mail"
    kind = MethodKind.CODE
    many_per_user = False
    checks_slowly = False
    challenge_seconds = VALID_MINUTES * 60
    # SecondFactorService refuses a new challenge this soon after the last one, so nobody can
    # flood a mailbox by reloading the page.
    resend_cooldown_seconds = 30

    async def begin_enrolment(
        self, context: MethodContext, enrolled: Sequence[StoredCredential] = ()
    ) -> Draft:
        chosen = users_choose_address(context.options)
        if chosen:
            typed = context.entered.get("address")
            if typed is None:  # the first page: where should codes go?
                raise DetailsNeeded(_address_form(context.user.email.strip()))
            address = checked_address(typed)
        else:  # whatever the form said: the account's address or none
            address = context.user.email.strip()
            if not address:
                raise EnrolmentRefused(NO_ADDRESS)
        code = new_code()
        return Draft(
            # An address the user just typed is shown whole, so they can spot a typo in it.
            show={
                "address": address if chosen else mask_address(address),
                "chosen": chosen,
                "minutes": VALID_MINUTES,
            },
            keep={**kept_code(code), "address": address},
            delivery=code_message(address, code, "set up sign-in codes by e-mail"),
        )

    async def finish_enrolment(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        secret: str | None,
        response: Mapping[str, str],
        enrolled: Sequence[StoredCredential] = (),
    ) -> NewCredential:
        address = keep.get("address")
        if not isinstance(address, str) or not address:
            raise ResponseRejected("enrolment draft has no address")
        if not code_matches(keep, response.get("code", "")):
            raise ResponseRejected("wrong or malformed code")
        return NewCredential(label=mask_address(address), state={"address": address})

    async def start(
        self, context: MethodContext, credentials: Sequence[StoredCredential]
    ) -> Prompt:
        credential = next((c for c in credentials if _address_of(c)), None)
        if credential is None:  # every credential stores its address: the data is damaged
            raise TwofaError("no e-mail credential with an address")
        address = _address_of(credential)
        code = new_code()
        return Prompt(
            show={"address": mask_address(address), "minutes": VALID_MINUTES},
            keep={**kept_code(code), "credential": credential.id},
            delivery=code_message(address, code, "finish signing in"),
        )

    async def verify(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        credentials: Sequence[StoredCredential],
        response: Mapping[str, str],
    ) -> Verified:
        credential_id = keep.get("credential")
        if not any(c.id == credential_id for c in credentials):
            raise ResponseRejected("the address this code was sent to was removed")
        if not code_matches(keep, response.get("code", "")):
            raise ResponseRejected("wrong or malformed code")
        assert isinstance(credential_id, int)
        return Verified(credential_id)


def _address_of(credential: StoredCredential) -> str:
    address = credential.state.get("address")
    return address if isinstance(address, str) else ""
