"""Which of Duo's factors a user is offered (their device can do it and the admin allows it),
what Duo's answers mean to the user, and the one per-user limit on everything that reaches
the user's phone: pushes, calls and texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final

from twofa.config import DuoFactor
from twofa.duo import DuoApiError
from twofa.duo.models import Capability, Device, DeviceType
from twofa.methods.base import OutOfBandAnswer
from twofa.methods.duo_push import CODE
from twofa.services.second_factor.outcomes import Completion

# Challenge rows (and audit kinds) per factor. A push and a call are followed with
# auth_status; a text only marks that one was sent, so it counts towards the limit.
PUSH_CHALLENGE: Final = CODE
PHONE_CHALLENGE: Final = "duo_phone"
SMS_CHALLENGE: Final = "duo_sms"
POLLED_CHALLENGES: Final = (PUSH_CHALLENGE, PHONE_CHALLENGE)


class PushState(Enum):
    PENDING = "pending"
    ALLOW = "allow"
    DENY = "deny"
    FRAUD = "fraud"
    TIMEOUT = "timeout"


MESSAGES: Final = {
    PushState.PENDING: "Push sent. Approve it in Duo Mobile.",
    PushState.ALLOW: "Approved. Signing you in…",
    PushState.DENY: "Login request denied.",
    PushState.FRAUD: "Login request reported as fraudulent. Your administrator has been told.",
    PushState.TIMEOUT: "The login request expired before it was answered.",
}
# How a push or call ended when the user said no (or nothing): the page's state of the same name
ANSWERED_NO: Final = (OutOfBandAnswer.DENY, OutOfBandAnswer.FRAUD, OutOfBandAnswer.TIMEOUT)
CALLING: Final = "Calling your phone… Answer it and press 1 to approve."


def pending_message(challenge_kind: str) -> str:
    return CALLING if challenge_kind == PHONE_CHALLENGE else MESSAGES[PushState.PENDING]


class Bypass(Enum):
    """Why a sign-in would go ahead on the password alone (`DuoPushService.bypass`)."""

    DUO_ALLOWS = "Duo bypass"  # Duo's own policy: this user needs no second factor
    FAILMODE_SAFE = "failmode safe"  # Duo cannot be reached and the admin chose to fail open


BYPASS_REFUSALS: Final = {
    Bypass.DUO_ALLOWS: "Duo lets your account in without a second factor, but this server needs "
    "one you have set up. Use another method, or ask your administrator.",
    Bypass.FAILMODE_SAFE: "Duo Security cannot be reached right now, and your account cannot "
    "sign in without it. Use another method, or try again in a few minutes.",
}


CANNOT_CONFIRM: Final = (
    "Duo Security cannot be reached, so it cannot confirm it's you right now. "
    "Use another method or try again later."
)


def duo_refused_message(exc: DuoApiError) -> str:
    """Duo refused twofa itself: say what the user can do; the admin sees the cause."""
    if exc.http_status == 429:
        return (
            "Duo is refusing requests for a moment (too many). Wait a minute and try again, "
            "or use another method."
        )
    return (
        "This server cannot use Duo right now: Duo refused its keys (a wrong secret key or a "
        "clock that is off). Sign-in with Duo is refused until your administrator fixes it; "
        "use another method."
    )


def refusal_message(exc: DuoApiError) -> str:
    if exc.code == 40002 and exc.detail and "username" in exc.detail:
        return (
            "Your username already exists in Duo without an activated phone. Ask your "
            "administrator to remove or activate it in Duo, then try again."
        )
    if exc.code == 40002 and exc.detail == "no capable device":
        return "Your phone registered with Duo cannot do that. Choose another way to sign in."
    return "Duo refused the request. Your administrator can see the details in the audit log."


@dataclass(frozen=True)
class FactorOffer:
    """What the sign-in page offers. `phone` and `sms` are the devices Duo can call or text;
    `passcode` means a passcode from Duo Mobile or a hardware token is accepted."""

    push: bool = False
    phone: tuple[Device, ...] = ()
    sms: tuple[Device, ...] = ()
    passcode: bool = False

    @property
    def anything(self) -> bool:
        return self.push or bool(self.phone) or bool(self.sms) or self.passcode

    @property
    def passcode_field(self) -> bool:
        """Whether a passcode may be typed at all: from Duo Mobile, or from a text."""
        return self.passcode or bool(self.sms)


def offer_for(devices: Sequence[Device], allowed: Iterable[DuoFactor]) -> FactorOffer:
    """Only what both the user's devices and the admin allow."""
    permitted = set(allowed)

    def able(factor: DuoFactor, capability: Capability) -> tuple[Device, ...]:
        if factor not in permitted:
            return ()
        return tuple(device for device in devices if device.can(capability))

    # Hardware tokens come without capabilities in preauth, yet they show passcodes.
    tokens = any(device.type is DeviceType.TOKEN for device in devices)
    return FactorOffer(
        push=bool(able(DuoFactor.PUSH, Capability.PUSH)),
        phone=able(DuoFactor.PHONE, Capability.PHONE),
        sms=able(DuoFactor.SMS, Capability.SMS),
        passcode=bool(able(DuoFactor.PASSCODE, Capability.MOBILE_OTP))
        or (tokens and DuoFactor.PASSCODE in permitted),
    )


def offer_for_new_duo_mobile(allowed: Iterable[DuoFactor]) -> FactorOffer:
    """A phone activated on twofa's set-up page has no number: it pushes and shows passcodes."""
    permitted = set(allowed)
    return FactorOffer(push=DuoFactor.PUSH in permitted, passcode=DuoFactor.PASSCODE in permitted)


class SetupKind(Enum):
    ACTIVATE = "activate"  # scan the QR code, then push
    READY = "ready"  # already has a push-capable device in Duo
    BYPASS = "bypass"  # Duo says allow without a second factor
    DENIED = "denied"  # Duo's policy refuses this user


@dataclass(frozen=True)
class SetupView:
    kind: SetupKind
    activation_code: str | None = None
    expires_at: datetime | None = None
    devices: tuple[Device, ...] = ()  # those that can take a push
    preferred_device: str | None = None
    offer: FactorOffer = field(default_factory=FactorOffer)


@dataclass(frozen=True)
class PollResult:
    state: PushState
    message: str
    completion: Completion | None = None
