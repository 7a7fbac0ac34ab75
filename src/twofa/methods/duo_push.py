"""Duo Push as a second factor, with Duo's other factors (a phone call, SMS passcodes, Duo
Mobile passcodes): the calls to Duo and what they mean, no persistence.

The service layer stores what this returns (enrolment, txid, preferred device) and decides
failmode; this module only speaks Duo.
"""

from __future__ import annotations

from dataclasses import dataclass

from twofa.config import DuoSettings
from twofa.duo import AuthRequest, DuoAuthClient
from twofa.duo.models import (
    AuthOutcome,
    Enrollment,
    EnrollmentStatus,
    Factor,
    Preauth,
    PushRequest,
)

CODE = "duo_push"
ACTIVATION_VALID_SECS = 3600


@dataclass(frozen=True)
class PushContext:
    """What the phone shows: who, for which application, from which address."""

    username: str
    display_name: str
    client_ip: str
    device: str = "auto"


class DuoPushMethod:
    code = CODE

    def __init__(self, client: DuoAuthClient, settings: DuoSettings) -> None:
        self._client = client
        self._settings = settings

    async def preauth(self, username: str, client_ip: str) -> Preauth:
        return await self._client.preauth(username=username, ipaddr=client_ip or None)

    async def begin_enrollment(self, username: str) -> Enrollment:
        return await self._client.enroll(username=username, valid_secs=ACTIVATION_VALID_SECS)

    async def enrollment_status(self, duo_user_id: str, activation_code: str) -> EnrollmentStatus:
        return await self._client.enroll_status(
            user_id=duo_user_id, activation_code=activation_code
        )

    async def start(self, context: PushContext) -> str:
        """Sends the push (`async=1`) and returns Duo's txid; never waits for the phone."""
        pushinfo: tuple[tuple[str, str], ...] = (("Application", self._settings.application_name),)
        if context.client_ip:
            pushinfo += (("IP address", context.client_ip),)
        request = AuthRequest(
            factor=Factor.PUSH,
            username=context.username,
            push=PushRequest(
                device=context.device,
                type=self._settings.push_type,
                display_username=context.display_name or context.username,
                pushinfo=pushinfo,
            ),
            ipaddr=context.client_ip or None,
        )
        return await self._client.start_auth(request)

    async def start_call(self, context: PushContext) -> str:
        """Has Duo call the phone (`async=1`); followed with `poll` exactly like a push."""
        request = AuthRequest(
            factor=Factor.PHONE,
            username=context.username,
            push=PushRequest(device=context.device),
            ipaddr=context.client_ip or None,
        )
        return await self._client.start_auth(request)

    async def send_sms_passcodes(self, context: PushContext) -> AuthOutcome:
        """Has Duo text a new batch of passcodes. Duo answers at once with result `deny` and
        status `sent`: nobody is signed in by this, the user types one of the passcodes next."""
        request = AuthRequest(
            factor=Factor.SMS,
            username=context.username,
            push=PushRequest(device=context.device),
            ipaddr=context.client_ip or None,
        )
        return await self._client.auth(request)

    async def poll(self, txid: str) -> AuthOutcome:
        return await self._client.auth_status(txid)

    async def verify_passcode(self, username: str, passcode: str, client_ip: str) -> AuthOutcome:
        request = AuthRequest(
            factor=Factor.PASSCODE,
            username=username,
            passcode=passcode,
            ipaddr=client_ip or None,
        )
        return await self._client.auth(request)
