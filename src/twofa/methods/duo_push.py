"""Duo Push as a second factor, an out-of-band method (methods.base.OutOfBandMethod: start,
then poll), with Duo's other factors (a phone call, SMS passcodes, Duo Mobile passcodes): the
calls to Duo and what their answers mean (`answer_of`), no persistence.

The service layer stores what this returns (enrolment, txid, preferred device) and decides
failmode; this module only speaks Duo.
"""

from __future__ import annotations

from twofa.config import DuoSettings
from twofa.duo import AuthRequest, DuoAuthClient
from twofa.duo.models import (
    AuthOutcome,
    AuthResult,
    Enrollment,
    EnrollmentStatus,
    Factor,
    Preauth,
    PushRequest,
    TransactionStatus,
)
from twofa.errors import Unavailable
from twofa.methods.base import MethodKind, OutOfBandAnswer, OutOfBandRequest

CODE = "duo_push"
ACTIVATION_VALID_SECS = 3600


class DuoNotConfigured(Unavailable):
    """Duo was asked before the gateway had keys for it (the service is only built once it
    has them, so this is a wiring error, never a user's)."""


def answer_of(outcome: AuthOutcome) -> OutOfBandAnswer:
    """What Duo's answer to a push, a call or a passcode means. "allow" with status "bypass"
    is Duo's policy waiving the factor for this user (whatever was typed or tapped): WAIVED,
    which proves nothing."""
    if outcome.result is AuthResult.WAITING:
        return OutOfBandAnswer.PENDING
    if outcome.result is AuthResult.ALLOW:
        waived = outcome.status is TransactionStatus.BYPASS
        return OutOfBandAnswer.WAIVED if waived else OutOfBandAnswer.ALLOW
    return {
        TransactionStatus.FRAUD: OutOfBandAnswer.FRAUD,
        TransactionStatus.TIMEOUT: OutOfBandAnswer.TIMEOUT,
    }.get(outcome.status, OutOfBandAnswer.DENY)


class DuoPushMethod:
    """Registered once at start-up (methods.registry); the console may change Duo's keys while
    the gateway runs, so `connect` gives it the client and settings in force, and every call
    uses the latest."""

    code = CODE
    title = "Duo Push"
    kind = MethodKind.OUT_OF_BAND
    many_per_user = False
    challenge_seconds = 75  # Duo's own push timeout is about 60 s

    def __init__(self) -> None:
        self._connection: tuple[DuoAuthClient, DuoSettings] | None = None

    def connect(self, client: DuoAuthClient, settings: DuoSettings) -> None:
        self._connection = (client, settings)

    @property
    def _client(self) -> DuoAuthClient:
        if self._connection is None:
            raise DuoNotConfigured("Duo Push has no Duo application yet")
        return self._connection[0]

    @property
    def _settings(self) -> DuoSettings:
        if self._connection is None:
            raise DuoNotConfigured("Duo Push has no Duo application yet")
        return self._connection[1]

    async def preauth(self, username: str, client_ip: str) -> Preauth:
        return await self._client.preauth(username=username, ipaddr=client_ip or None)

    async def begin_enrollment(self, username: str) -> Enrollment:
        return await self._client.enroll(username=username, valid_secs=ACTIVATION_VALID_SECS)

    async def enrollment_status(self, duo_user_id: str, activation_code: str) -> EnrollmentStatus:
        return await self._client.enroll_status(
            user_id=duo_user_id, activation_code=activation_code
        )

    async def start(self, context: OutOfBandRequest) -> str:
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

    async def start_call(self, context: OutOfBandRequest) -> str:
        """Has Duo call the phone (`async=1`); followed with `poll` exactly like a push."""
        request = AuthRequest(
            factor=Factor.PHONE,
            username=context.username,
            push=PushRequest(device=context.device),
            ipaddr=context.client_ip or None,
        )
        return await self._client.start_auth(request)

    async def send_sms_passcodes(self, context: OutOfBandRequest) -> AuthOutcome:
        """Has Duo text a new batch of passcodes. Duo answers at once with result `deny` and
        status `sent`: nobody is signed in by this, the user types one of the passcodes next."""
        request = AuthRequest(
            factor=Factor.SMS,
            username=context.username,
            push=PushRequest(device=context.device),
            ipaddr=context.client_ip or None,
        )
        return await self._client.auth(request)

    async def poll(self, handle: str) -> OutOfBandAnswer:
        return answer_of(await self._client.auth_status(handle))

    async def verify_passcode(
        self, username: str, passcode: str, client_ip: str
    ) -> OutOfBandAnswer:
        request = AuthRequest(
            factor=Factor.PASSCODE,
            username=username,
            passcode=passcode,
            ipaddr=client_ip or None,
        )
        return answer_of(await self._client.auth(request))
