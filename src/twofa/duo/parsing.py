"""Turns Duo's JSON `response` objects into typed values, or says precisely what is malformed.

Duo is an outside party: a missing field or an unknown word becomes `DuoMalformedResponse`
naming the field, never a KeyError deep inside a login.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from twofa.duo.errors import DuoMalformedResponse
from twofa.duo.models import (
    AuthOutcome,
    AuthResult,
    Capability,
    Device,
    DeviceType,
    Enrollment,
    EnrollmentStatus,
    Preauth,
    PreauthOutcome,
    TransactionStatus,
)

EnumT = TypeVar("EnumT", bound=Enum)


def as_object(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise DuoMalformedResponse(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def text_field(
    obj: Mapping[str, object], name: str, what: str, *, default: str | None = None
) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise DuoMalformedResponse(f"{what}: field {name!r} is missing or not a string")
    return value


def int_field(obj: Mapping[str, object], name: str, what: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DuoMalformedResponse(f"{what}: field {name!r} is missing or not an integer")
    return value


def enum_value(kind: type[EnumT], raw: object, what: str) -> EnumT:
    try:
        return kind(raw)
    except ValueError:
        raise DuoMalformedResponse(f"{what}: unknown {kind.__name__} {raw!r}") from None


def parse_time(response: object, what: str) -> int:
    return int_field(as_object(response, what), "time", what)


def parse_device(raw: object) -> Device:
    obj = as_object(raw, "preauth device")
    # Token devices come without a `capabilities` key in real traffic.
    capabilities_raw = obj.get("capabilities", [])
    if not isinstance(capabilities_raw, list):
        raise DuoMalformedResponse("preauth device: capabilities is not a list")
    known = {c.value for c in Capability}
    capabilities = frozenset(Capability(c) for c in capabilities_raw if c in known)
    sms_nextcode = obj.get("sms_nextcode")
    return Device(
        device_id=text_field(obj, "device", "preauth device"),
        type=enum_value(DeviceType, obj.get("type"), "preauth device"),
        name=text_field(obj, "name", "preauth device", default=""),
        display_name=text_field(obj, "display_name", "preauth device", default=""),
        number=text_field(obj, "number", "preauth device", default=""),
        capabilities=capabilities,
        sms_nextcode=sms_nextcode if isinstance(sms_nextcode, str) else None,
    )


def parse_preauth(response: object) -> Preauth:
    obj = as_object(response, "preauth")
    outcome = enum_value(PreauthOutcome, obj.get("result"), "preauth")
    devices_raw = obj.get("devices", [])
    if not isinstance(devices_raw, list):
        raise DuoMalformedResponse("preauth: devices is not a list")
    portal = obj.get("enroll_portal_url")
    return Preauth(
        outcome=outcome,
        status_msg=text_field(obj, "status_msg", "preauth", default=""),
        devices=tuple(parse_device(device) for device in devices_raw),
        enroll_portal_url=portal if isinstance(portal, str) else None,
    )


def parse_enrollment(response: object) -> Enrollment:
    obj = as_object(response, "enroll")
    codes = obj.get("bypass_codes", [])
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        raise DuoMalformedResponse("enroll: bypass_codes is not a list of strings")
    return Enrollment(
        user_id=text_field(obj, "user_id", "enroll"),
        username=text_field(obj, "username", "enroll"),
        activation_code=text_field(obj, "activation_code", "enroll"),
        activation_barcode=text_field(obj, "activation_barcode", "enroll"),
        expires_at=int_field(obj, "expiration", "enroll"),
        bypass_codes=tuple(codes),
    )


def parse_enrollment_status(response: object) -> EnrollmentStatus:
    return enum_value(EnrollmentStatus, response, "enroll_status")


def parse_auth_outcome(response: object, what: str) -> AuthOutcome:
    obj = as_object(response, what)
    token = obj.get("trusted_device_token")
    return AuthOutcome(
        result=enum_value(AuthResult, obj.get("result"), what),
        status=enum_value(TransactionStatus, obj.get("status"), what),
        status_msg=text_field(obj, "status_msg", what, default=""),
        trusted_device_token=token if isinstance(token, str) else None,
    )


def parse_txid(response: object) -> str:
    return text_field(as_object(response, "auth (async)"), "txid", "auth (async)")
