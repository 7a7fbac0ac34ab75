"""Typed values of Duo's Auth API v2: the vocabulary the client returns and the simulator speaks.

Duo's words (`auth`, `allow`, `pushed`, `mobile_otp` …) are kept as enum values so that both
sides of the wire agree on spelling in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PreauthOutcome(Enum):
    AUTH = "auth"
    ALLOW = "allow"
    DENY = "deny"
    ENROLL = "enroll"


class Capability(Enum):
    AUTO = "auto"
    PUSH = "push"
    SMS = "sms"
    PHONE = "phone"
    MOBILE_OTP = "mobile_otp"


class DeviceType(Enum):
    PHONE = "phone"
    TOKEN = "token"  # noqa: S105 (a device kind, not a secret)


class Factor(Enum):
    AUTO = "auto"
    PUSH = "push"
    PASSCODE = "passcode"
    SMS = "sms"
    PHONE = "phone"


class AuthResult(Enum):
    """The coarse answer of `auth` and `auth_status`."""

    WAITING = "waiting"
    ALLOW = "allow"
    DENY = "deny"


class TransactionStatus(Enum):
    """Duo's status words; the first four are in progress, the rest end a transaction."""

    CALLING = "calling"
    ANSWERED = "answered"
    PUSHED = "pushed"
    PUSH_FAILED = "push_failed"
    TIMEOUT = "timeout"
    FRAUD = "fraud"
    ALLOW = "allow"
    BYPASS = "bypass"
    DENY = "deny"
    LOCKED_OUT = "locked_out"
    SENT = "sent"

    @property
    def is_final(self) -> bool:
        return self not in _IN_PROGRESS

    @property
    def result(self) -> AuthResult:
        if not self.is_final:
            return AuthResult.WAITING
        if self in (TransactionStatus.ALLOW, TransactionStatus.BYPASS):
            return AuthResult.ALLOW
        return AuthResult.DENY


_IN_PROGRESS = frozenset(
    {
        TransactionStatus.CALLING,
        TransactionStatus.ANSWERED,
        TransactionStatus.PUSHED,
        TransactionStatus.PUSH_FAILED,
    }
)


class EnrollmentStatus(Enum):
    SUCCESS = "success"
    WAITING = "waiting"
    INVALID = "invalid"


@dataclass(frozen=True)
class Device:
    device_id: str
    type: DeviceType
    name: str
    display_name: str
    number: str
    capabilities: frozenset[Capability]
    sms_nextcode: str | None = None

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities


@dataclass(frozen=True)
class Preauth:
    outcome: PreauthOutcome
    status_msg: str
    devices: tuple[Device, ...] = ()
    enroll_portal_url: str | None = None

    @property
    def push_devices(self) -> tuple[Device, ...]:
        return self.devices_that_can(Capability.PUSH)

    def devices_that_can(self, capability: Capability) -> tuple[Device, ...]:
        return tuple(device for device in self.devices if device.can(capability))


@dataclass(frozen=True)
class Enrollment:
    """A fresh Duo user waiting for Duo Mobile to scan `activation_code` before `expires_at`."""

    user_id: str
    username: str
    activation_code: str
    activation_barcode: str
    expires_at: int
    bypass_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthOutcome:
    """The answer of a synchronous `auth`, or one `auth_status` poll."""

    result: AuthResult
    status: TransactionStatus
    status_msg: str
    trusted_device_token: str | None = None

    @property
    def is_final(self) -> bool:
        return self.result is not AuthResult.WAITING


@dataclass(frozen=True)
class PushRequest:
    """What a push shows on the phone: `type` is the title, `pushinfo` key/value context."""

    device: str = "auto"
    type: str | None = None
    display_username: str | None = None
    pushinfo: tuple[tuple[str, str], ...] = ()
