"""The protocols every second factor implements, and the values that cross them: `Method` for
those verified here (TOTP, backup codes, e-mail codes, security questions, security keys),
`OutOfBandMethod` for one a provider verifies on the user's phone (Duo Push: start, then poll).

Methods compute, services persist: a method never touches the database. It gets what the
service loaded (the user's credentials, secrets already opened) and returns what should be
stored (a new credential, a new state, an item to mark used); the service applies that in the
transaction that consumes the challenge. An out-of-band method computes too: it turns its
provider's answer into an `OutOfBandAnswer`, and the service decides what that answer allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from twofa.errors import Invalid, Refused


class MethodKind(Enum):
    CODE = "code"  # the user types a code (TOTP, backup code, e-mail code)
    ANSWERS = "answers"  # the user answers questions
    WEBAUTHN = "webauthn"  # the browser asks an authenticator
    OUT_OF_BAND = "out_of_band"  # a provider asks the user's phone (a push, a call)


class OutOfBandAnswer(Enum):
    """How an out-of-band request ended, or that it has not yet. WAIVED: the provider let the
    user through without asking them (Duo's bypass status), which proves no factor."""

    PENDING = "pending"
    ALLOW = "allow"
    WAIVED = "waived"
    DENY = "deny"
    FRAUD = "fraud"  # the user answered "This wasn't me"
    TIMEOUT = "timeout"


class ResponseRejected(Refused):
    """The response does not prove the factor. `reason` is for the audit log only: the
    user always sees the same message, whatever went wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class EnrolmentRefused(Invalid):
    """An enrolment form the user must correct; `message` is shown to them as is."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    @property
    def user_message(self) -> str:
        return self.message


class DetailsNeeded(Invalid):
    """The enrolment can begin only once the user has filled in the method's form (the address
    codes by e-mail go to, when the admin lets users choose it). `show` goes to that form;
    `message` says what was wrong with what they typed, "" when they have typed nothing yet."""

    def __init__(self, show: Mapping[str, Any], message: str = "") -> None:
        self.show = show
        self.message = message
        super().__init__(message or "details needed")


@dataclass(frozen=True)
class MethodUser:
    user_id: int
    username: str
    display_name: str
    email: str


@dataclass(frozen=True)
class StoredItem:
    """One hashed part of a credential (a backup code, a security answer)."""

    id: int
    slot: str
    digest: str
    used: bool


@dataclass(frozen=True)
class StoredCredential:
    """A credential as the service loaded it; `secret` is already opened (unsealed)."""

    id: int
    label: str
    secret: str | None
    state: Mapping[str, Any]
    version: int
    items: tuple[StoredItem, ...] = ()


@dataclass(frozen=True)
class NewItem:
    slot: str
    digest: str


@dataclass(frozen=True)
class NewCredential:
    """What a finished enrolment stores; the service seals `secret`."""

    label: str
    secret: str | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    items: tuple[NewItem, ...] = ()
    # An id no other credential of the method may carry, whoever's it is (a security key's
    # credential id): the database refuses a second one, even from a racing enrolment.
    unique_id: str | None = None


def already_registered(title: str) -> str:
    """What a user is told when a credential they set up is registered already."""
    return f"This {title.lower()} is already registered."


@dataclass(frozen=True)
class Delivery:
    """A message the service must send for the method (an e-mail code)."""

    to: str
    subject: str
    body: str


@dataclass(frozen=True)
class Draft:
    """An enrolment in progress. `show` goes to the page; `keep` and `secret` stay on the
    server (the service seals `secret`) until the user confirms. `show` and `keep` must be
    JSON values: they are stored with the challenge."""

    show: Mapping[str, Any]
    keep: Mapping[str, Any] = field(default_factory=dict)
    secret: str | None = None
    delivery: Delivery | None = None


@dataclass(frozen=True)
class Prompt:
    """A started challenge: `show` goes to the page, `keep` stays on the server for verify."""

    show: Mapping[str, Any]
    keep: Mapping[str, Any] = field(default_factory=dict)
    delivery: Delivery | None = None


@dataclass(frozen=True)
class Verified:
    """A response that proves the factor, and what that changes: the credential's new state
    (applied only if nobody changed it meanwhile) and/or a single-use item to mark used."""

    credential_id: int
    state: Mapping[str, Any] | None = None
    use_item: int | None = None


@dataclass(frozen=True)
class MethodContext:
    """Who is enrolling or verifying, when, and the admin's options for this method (from
    the console; empty when the admin set none). `entered`: what the user typed into the form
    of a `DetailsNeeded` to begin an enrolment; empty otherwise."""

    user: MethodUser
    now: datetime
    options: Mapping[str, Any] = field(default_factory=dict)
    entered: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutOfBandRequest:
    """What the phone shows: who, from which address; `device` picks one of the user's."""

    username: str
    display_name: str
    client_ip: str
    device: str = "auto"


class OutOfBandMethod(Protocol):
    """A second factor a provider checks on a device of the user's. `start` sends the request
    and returns the provider's handle without waiting for the phone; `poll` asks how it ended
    (it may hold a while for an answer, as Duo's long poll does)."""

    code: str
    title: str
    kind: MethodKind  # OUT_OF_BAND
    many_per_user: bool
    challenge_seconds: int

    async def start(self, request: OutOfBandRequest) -> str: ...

    async def poll(self, handle: str) -> OutOfBandAnswer: ...


class Method(Protocol):
    code: str
    title: str  # what users see in lists: "Authenticator app"
    kind: MethodKind
    many_per_user: bool  # several security keys; one of everything else
    challenge_seconds: int  # how long a started challenge may be answered
    # `verify` runs a password-grade hash (backup codes, security answers: tens of ms of CPU):
    # the service then never runs it inside an open database transaction.
    checks_slowly: bool

    async def begin_enrolment(
        self, context: MethodContext, enrolled: Sequence[StoredCredential] = ()
    ) -> Draft:
        """`enrolled`: the user's credentials of this method already stored, for a method
        with `many_per_user` (so a second one is not the first again); a method with one
        per user gets none, since its new credential replaces the old. Raises
        `EnrolmentRefused`, or `DetailsNeeded` to ask the user for something first."""
        ...

    async def finish_enrolment(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        secret: str | None,
        response: Mapping[str, str],
        enrolled: Sequence[StoredCredential] = (),
    ) -> NewCredential:
        """Raises `EnrolmentRefused` (user can correct) or `ResponseRejected`; `enrolled`
        as for `begin_enrolment`, read again (another tab may have added one meanwhile)."""
        ...

    async def start(
        self, context: MethodContext, credentials: Sequence[StoredCredential]
    ) -> Prompt: ...

    async def verify(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        credentials: Sequence[StoredCredential],
        response: Mapping[str, str],
    ) -> Verified:
        """Raises `ResponseRejected` for anything that does not prove the factor."""
        ...


def normalise_code(raw: str) -> str:
    """Codes as people type them: spaces and dashes ignored, letters upper-cased."""
    return "".join(ch for ch in raw if ch not in " -\t").upper()
