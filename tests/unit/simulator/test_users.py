"""UserDirectory and SimUser: the simulated Duo account's users, enrolments and passcodes."""

from __future__ import annotations

import re

import pytest

from twofa.duo.models import Capability, DeviceType, EnrollmentStatus, PreauthOutcome
from twofa.simulator.errors import DuoFailure
from twofa.simulator.users import (
    MAX_BYPASS_CODES,
    UserDirectory,
    new_device,
)

VALID_SECS = 600


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory(clock: FakeClock) -> UserDirectory:
    return UserDirectory(clock)


def test_put_creates_a_user_with_a_duo_shaped_id(directory: UserDirectory) -> None:
    phone = new_device(DeviceType.PHONE, "iPhone", number="XXX-XXX-0001")
    user = directory.put("alice", [phone], None)
    assert re.fullmatch(r"DU[A-Z0-9]{18}", user.user_id)
    assert re.fullmatch(r"DP[A-Z0-9]{18}", phone.device_id)
    assert directory.by_name("alice") is user
    assert directory.by_id(user.user_id) is user
    assert user.devices == [phone]
    assert user.preauth_override is None


def test_put_replaces_and_keeps_the_user_id(directory: UserDirectory) -> None:
    first = directory.put("alice", [new_device(DeviceType.PHONE, "iPhone")], None)
    token = new_device(DeviceType.TOKEN, "Token")
    second = directory.put("alice", [token], PreauthOutcome.DENY)
    assert second.user_id == first.user_id
    assert directory.by_name("alice") is second
    assert directory.by_id(first.user_id) is second
    assert second.devices == [token]
    assert second.preauth_override is PreauthOutcome.DENY
    assert [user.username for user in directory.all()] == ["alice"]


def test_all_is_sorted_and_clear_empties(directory: UserDirectory) -> None:
    for name in ("carol", "alice", "bob"):
        directory.put(name, [], None)
    assert [user.username for user in directory.all()] == ["alice", "bob", "carol"]
    _, enrollment = directory.enroll("dave", VALID_SECS, 0)
    directory.clear()
    assert directory.all() == []
    assert directory.by_name("alice") is None
    assert directory.enrollment(enrollment.activation_code) is None


def test_enroll_creates_a_user_without_devices(directory: UserDirectory, clock: FakeClock) -> None:
    user, enrollment = directory.enroll("alice", VALID_SECS, 0)
    assert user.devices == []
    assert user.bypass_codes == set()
    assert enrollment.activation_code.startswith("duo://")
    assert len(enrollment.activation_code) > len("duo://")
    assert enrollment.user_id == user.user_id
    assert enrollment.username == "alice"
    assert enrollment.expires_at == clock.now + VALID_SECS
    assert directory.enrollment(enrollment.activation_code) is enrollment
    assert directory.enrollments("alice") == [enrollment]
    assert directory.enrollments("bob") == []


def test_enroll_without_username_invents_one(directory: UserDirectory) -> None:
    user, enrollment = directory.enroll(None, VALID_SECS, 0)
    assert user.username
    assert directory.by_name(user.username) is user
    assert enrollment.username == user.username


def test_enroll_existing_username_is_refused(directory: UserDirectory) -> None:
    directory.put("alice", [], None)
    with pytest.raises(DuoFailure) as caught:
        directory.enroll("alice", VALID_SECS, 0)
    assert caught.value.code == 40002
    assert caught.value.http_status == 400


@pytest.mark.parametrize("count", [1, 3, MAX_BYPASS_CODES])
def test_enroll_issues_the_bypass_codes_asked_for(directory: UserDirectory, count: int) -> None:
    user, _ = directory.enroll("alice", VALID_SECS, count)
    assert len(user.bypass_codes) == count
    assert all(re.fullmatch(r"\d{9}", code) for code in user.bypass_codes)


@pytest.mark.parametrize("count", [MAX_BYPASS_CODES + 1, -1])
def test_enroll_refuses_a_bad_bypass_code_count(directory: UserDirectory, count: int) -> None:
    with pytest.raises(DuoFailure) as caught:
        directory.enroll("alice", VALID_SECS, count)
    assert caught.value.code == 40002
    assert caught.value.detail == "bypass_codes"
    assert directory.by_name("alice") is None


def test_enrollment_waiting_then_success_after_activate(
    directory: UserDirectory, clock: FakeClock
) -> None:
    user, enrollment = directory.enroll("alice", VALID_SECS, 0)
    assert enrollment.status(clock.now) is EnrollmentStatus.WAITING
    assert enrollment.to_json(clock.now)["status"] == "waiting"
    activated = directory.activate(enrollment.activation_code)
    assert activated is user
    assert enrollment.status(clock.now) is EnrollmentStatus.SUCCESS
    [phone] = user.devices
    assert phone.type is DeviceType.PHONE
    assert phone.can(Capability.PUSH)
    assert not phone.can(Capability.SMS)
    assert not phone.can(Capability.PHONE)
    # Activated for good: the expiry no longer matters.
    clock.now += VALID_SECS * 2
    assert enrollment.status(clock.now) is EnrollmentStatus.SUCCESS


def test_activate_twice_adds_one_device(directory: UserDirectory) -> None:
    user, enrollment = directory.enroll("alice", VALID_SECS, 0)
    directory.activate(enrollment.activation_code)
    directory.activate(enrollment.activation_code)
    assert len(user.devices) == 1


def test_enrollment_expires_and_activation_is_refused(
    directory: UserDirectory, clock: FakeClock
) -> None:
    user, enrollment = directory.enroll("alice", VALID_SECS, 0)
    clock.now += VALID_SECS
    assert enrollment.status(clock.now) is EnrollmentStatus.INVALID
    assert enrollment.to_json(clock.now)["status"] == "invalid"
    with pytest.raises(DuoFailure) as caught:
        directory.activate(enrollment.activation_code)
    assert caught.value.code == 40002
    assert user.devices == []


def test_activate_unknown_code_is_refused(directory: UserDirectory) -> None:
    with pytest.raises(DuoFailure) as caught:
        directory.activate("duo://nosuchcode")
    assert caught.value.code == 40002


def test_enrollment_to_json_fields(directory: UserDirectory, clock: FakeClock) -> None:
    user, enrollment = directory.enroll("alice", VALID_SECS, 0)
    assert enrollment.to_json(clock.now) == {
        "username": "alice",
        "user_id": user.user_id,
        "activation_code": enrollment.activation_code,
        "status": "waiting",
        "expires_at": int(clock.now + VALID_SECS),
    }


def test_bypass_code_is_single_use(directory: UserDirectory) -> None:
    user, _ = directory.enroll("alice", VALID_SECS, 2)
    code = sorted(user.bypass_codes)[0]
    assert user.consume_passcode(code) is True
    assert user.consume_passcode(code) is False
    assert len(user.bypass_codes) == 1


def test_issued_passcode_is_single_use(directory: UserDirectory) -> None:
    user = directory.put("alice", [], None)
    codes = user.issue_passcodes(3)
    assert len(codes) == 3
    assert all(re.fullmatch(r"\d{6}", code) for code in codes)
    assert user.consume_passcode(codes[1]) is True
    assert user.consume_passcode(codes[1]) is False
    assert user.to_json()["passcodes"] == sorted({codes[0], codes[2]})


def test_unknown_passcode_is_refused(directory: UserDirectory) -> None:
    user = directory.put("alice", [], None)
    user.issue_passcodes(1)
    assert user.consume_passcode("not-a-code") is False


def test_token_json_has_no_capabilities_key() -> None:
    token = new_device(DeviceType.TOKEN, "Token")
    assert token.device_id.startswith("DH")
    assert token.capabilities == ()
    answer = token.to_json()
    assert "capabilities" not in answer
    assert answer["type"] == "token"
    assert answer["display_name"] == "Token"


def test_phone_json_lists_capabilities_and_number() -> None:
    phone = new_device(DeviceType.PHONE, "iPhone", number="XXX-XXX-4788")
    answer = phone.to_json()
    assert answer["capabilities"] == ["auto", "push", "sms", "phone", "mobile_otp"]
    assert answer["display_name"] == "iPhone (XXX-XXX-4788)"
    assert answer["device"] == phone.device_id


def test_device_lookup_and_first_capable(directory: UserDirectory) -> None:
    token = new_device(DeviceType.TOKEN, "Token")
    sms_only = new_device(DeviceType.PHONE, "Old phone", [Capability.SMS])
    full = new_device(DeviceType.PHONE, "iPhone")
    user = directory.put("alice", [token, sms_only, full], None)
    assert user.device(full.device_id) is full
    assert user.device("DPNOSUCHDEVICE") is None
    assert user.first_capable(Capability.SMS) is sms_only
    assert user.first_capable(Capability.PUSH) is full
    assert directory.put("bob", [token], None).first_capable(Capability.PUSH) is None


def test_user_to_json(directory: UserDirectory) -> None:
    phone = new_device(DeviceType.PHONE, "iPhone")
    user = directory.put("alice", [phone], PreauthOutcome.ALLOW)
    assert user.to_json() == {
        "username": "alice",
        "user_id": user.user_id,
        "preauth": "allow",
        "devices": [phone.to_json()],
        "passcodes": [],
    }
