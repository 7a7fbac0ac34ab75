"""The simulator's Duo account: users, their devices, enrolments, bypass codes and passcodes.

Identifiers follow Duo's shapes (`DU…` users, `DP…` phones, `DH…` tokens, `duo://…` activation
codes) so that anything that logs or validates them sees familiar values.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from twofa.duo.models import Capability, DeviceType, EnrollmentStatus, PreauthOutcome
from twofa.simulator.errors import invalid_parameter

ID_ALPHABET: Final = string.ascii_uppercase + string.digits
PHONE_CAPABILITIES: Final = (
    Capability.AUTO,
    Capability.PUSH,
    Capability.SMS,
    Capability.PHONE,
    Capability.MOBILE_OTP,
)
# A phone activated through /enroll has no number, so it cannot take calls or texts.
ACTIVATED_PHONE_CAPABILITIES: Final = (Capability.AUTO, Capability.PUSH, Capability.MOBILE_OTP)
SMS_BATCH_SIZE: Final = 10
SMS_PASSCODE_DIGITS: Final = 7  # Duo's texted passcodes are longer than Duo Mobile's six
MAX_BYPASS_CODES: Final = 10


def duo_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(18))


def digits(count: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(count))


@dataclass
class SimDevice:
    device_id: str
    type: DeviceType
    name: str
    number: str
    capabilities: tuple[Capability, ...]

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def display_name(self) -> str:
        return f"{self.name} ({self.number})" if self.number else self.name

    def to_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
            "device": self.device_id,
            "type": self.type.value,
            "name": self.name,
            "display_name": self.display_name,
            "number": self.number,
        }
        if self.type is DeviceType.PHONE:  # Real tokens carry no capabilities key at all.
            answer["capabilities"] = [c.value for c in self.capabilities]
        return answer


def new_device(
    device_type: DeviceType,
    name: str,
    capabilities: Iterable[Capability] | None = None,
    number: str = "",
) -> SimDevice:
    if capabilities is None:
        capabilities = PHONE_CAPABILITIES if device_type is DeviceType.PHONE else ()
    prefix = "DP" if device_type is DeviceType.PHONE else "DH"
    return SimDevice(duo_id(prefix), device_type, name, number, tuple(capabilities))


@dataclass(frozen=True)
class SmsMessage:
    """One text Duo sent: a numbered batch of passcodes for one phone."""

    device_id: str
    number: str
    sent_at: float
    passcodes: tuple[str, ...]

    def to_json(self, unused: set[str]) -> dict[str, object]:
        return {
            "device": self.device_id,
            "number": self.number,
            "sent_at": self.sent_at,
            "passcodes": list(self.passcodes),
            "unused": [code for code in self.passcodes if code in unused],
        }


@dataclass
class SimUser:
    user_id: str
    username: str
    devices: list[SimDevice] = field(default_factory=list)
    preauth_override: PreauthOutcome | None = None
    bypass_codes: set[str] = field(default_factory=set)
    passcodes: set[str] = field(default_factory=set)
    sms_passcodes: set[str] = field(default_factory=set)
    sms_sent: list[SmsMessage] = field(default_factory=list)
    trusted_device_tokens: set[str] = field(default_factory=set)

    def device(self, device_id: str) -> SimDevice | None:
        return next((d for d in self.devices if d.device_id == device_id), None)

    def first_capable(self, capability: Capability) -> SimDevice | None:
        return next((d for d in self.devices if d.can(capability)), None)

    def consume_passcode(self, passcode: str) -> bool:
        """Bypass codes, SMS passcodes and token/Duo Mobile codes each work once."""
        for pool in (self.passcodes, self.sms_passcodes, self.bypass_codes):
            if passcode in pool:
                pool.discard(passcode)
                return True
        return False

    def issue_passcodes(self, count: int) -> list[str]:
        codes = [digits(6) for _ in range(count)]
        self.passcodes.update(codes)
        return codes

    def text_passcodes(self, device: SimDevice, now: float) -> SmsMessage:
        """Texts a fresh batch; the previous batch stops working, so only the newest text
        on the phone is worth reading."""
        codes = tuple(digits(SMS_PASSCODE_DIGITS) for _ in range(SMS_BATCH_SIZE))
        message = SmsMessage(device.device_id, device.number, now, codes)
        self.sms_passcodes = set(codes)
        self.sms_sent.append(message)
        return message

    def sms_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "messages": [message.to_json(self.sms_passcodes) for message in self.sms_sent],
        }

    def to_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "user_id": self.user_id,
            "preauth": self.preauth_override.value if self.preauth_override else None,
            "devices": [device.to_json() for device in self.devices],
            "passcodes": sorted(self.passcodes | self.sms_passcodes),
        }


@dataclass
class SimEnrollment:
    user_id: str
    username: str
    activation_code: str
    expires_at: float
    activated: bool = False

    def status(self, now: float) -> EnrollmentStatus:
        if self.activated:
            return EnrollmentStatus.SUCCESS
        return EnrollmentStatus.WAITING if now < self.expires_at else EnrollmentStatus.INVALID

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "username": self.username,
            "user_id": self.user_id,
            "activation_code": self.activation_code,
            "status": self.status(now).value,
            "expires_at": int(self.expires_at),
        }


class UserDirectory:
    """All users of the simulated Duo account, shared by every integration as in real Duo."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_name: dict[str, SimUser] = {}
        self._by_id: dict[str, SimUser] = {}
        self._enrollments: dict[str, SimEnrollment] = {}

    def clear(self) -> None:
        self._by_name.clear()
        self._by_id.clear()
        self._enrollments.clear()

    def all(self) -> list[SimUser]:
        return sorted(self._by_name.values(), key=lambda user: user.username)

    def by_name(self, username: str) -> SimUser | None:
        return self._by_name.get(username)

    def by_id(self, user_id: str) -> SimUser | None:
        return self._by_id.get(user_id)

    def put(
        self, username: str, devices: list[SimDevice], preauth: PreauthOutcome | None
    ) -> SimUser:
        """Creates or replaces a user, keeping the user id when the name already exists."""
        existing = self._by_name.get(username)
        user = SimUser(existing.user_id if existing else duo_id("DU"), username, devices, preauth)
        self._by_name[username] = user
        self._by_id[user.user_id] = user
        return user

    def enroll(
        self, username: str | None, valid_secs: int, bypass_codes: int
    ) -> tuple[SimUser, SimEnrollment]:
        if username is not None and username in self._by_name:
            raise invalid_parameter("username already exists")
        if not 0 <= bypass_codes <= MAX_BYPASS_CODES:
            raise invalid_parameter("bypass_codes")
        user = self.put(username or f"user-{digits(8)}", [], None)
        user.bypass_codes.update(digits(9) for _ in range(bypass_codes))
        code = "duo://" + "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(20)
        )
        enrollment = SimEnrollment(user.user_id, user.username, code, self._clock() + valid_secs)
        self._enrollments[code] = enrollment
        return user, enrollment

    def enrollment(self, activation_code: str) -> SimEnrollment | None:
        return self._enrollments.get(activation_code)

    def enrollments(self, username: str | None = None) -> list[SimEnrollment]:
        return [e for e in self._enrollments.values() if username in (None, e.username)]

    def activate(self, activation_code: str, number: str = "") -> SimUser:
        """A phone scanned the activation QR: the user now has a push-capable Duo Mobile.
        With a `number` (as if the user also registered it in Duo), it takes calls and
        texts too."""
        enrollment = self._enrollments.get(activation_code)
        if enrollment is None:
            raise invalid_parameter("unknown activation_code")
        if enrollment.status(self._clock()) is EnrollmentStatus.INVALID:
            raise invalid_parameter("activation_code has expired")
        user = self._by_id[enrollment.user_id]
        if not enrollment.activated:
            enrollment.activated = True
            capabilities = PHONE_CAPABILITIES if number else ACTIVATED_PHONE_CAPABILITIES
            user.devices.append(new_device(DeviceType.PHONE, "Duo Mobile", capabilities, number))
        return user
