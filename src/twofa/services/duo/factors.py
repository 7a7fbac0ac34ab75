"""Duo's factors as the sign-in pages reach them: each request is checked against the factors
the admin allows (a refused one is audited, however the request was made), then a push, a
phone call, a text with SMS passcodes, or a passcode goes to Duo.

A call is followed like a push (`DuoPushService.poll`, the same challenge rows); a text signs
nobody in, it only lets the user type one of the passcodes it carried.
"""

from __future__ import annotations

from typing import Final, NoReturn

from twofa.config import DuoFactor
from twofa.domain.client import ClientInfo
from twofa.duo.models import TransactionStatus
from twofa.methods.base import OutOfBandRequest
from twofa.services.duo.push import DuoPushService
from twofa.services.duo.rules import PHONE_CHALLENGE, SMS_CHALLENGE
from twofa.services.second_factor.outcomes import Completion, SecondFactorError
from twofa.services.state.sessions import SessionView

TOO_MANY: Final = "Too many calls and messages to your phone. Wait a minute, then try again."
SMS_SENT: Final = "We sent passcodes to your phone by SMS. Type one of them below."
# What a refused factor is called, in the audit log and in what the user is told.
AUDIT_KINDS: Final = {
    DuoFactor.PUSH: "duo_push",
    DuoFactor.PHONE: PHONE_CHALLENGE,
    DuoFactor.SMS: SMS_CHALLENGE,
    DuoFactor.PASSCODE: "duo_passcode",
}
NAMES: Final = {
    DuoFactor.PUSH: "Duo Push",
    DuoFactor.PHONE: "a phone call",
    DuoFactor.SMS: "passcodes by SMS",
    DuoFactor.PASSCODE: "a passcode",
}


class FactorNotAllowed(SecondFactorError):
    """The admin does not allow this factor; the request never reached Duo."""


class DuoFactorService:
    """One per request, around the gateway's `DuoPushService` (which holds the state)."""

    def __init__(self, push: DuoPushService) -> None:
        self._push = push

    def allows(self, factor: DuoFactor) -> bool:
        return factor in self._push.settings.allowed_factors

    def allows_passcodes(self) -> bool:
        """Texted passcodes are typed like Duo Mobile ones, so allowing SMS allows typing."""
        return self.allows(DuoFactor.PASSCODE) or self.allows(DuoFactor.SMS)

    async def send_push(self, session: SessionView, client: ClientInfo, device: str) -> str:
        await self._require(DuoFactor.PUSH, session, client)
        return await self._push.send_push(session, client, device)

    async def call(self, session: SessionView, client: ClientInfo, device: str) -> str:
        """Has Duo call the phone; returns the challenge id the page polls like a push."""
        await self._require(DuoFactor.PHONE, session, client)
        push = self._push
        purpose, user = await push.challenger(session)
        await push.fatigue.limit_phone_requests(user, client, PHONE_CHALLENGE, TOO_MANY)
        context = OutOfBandRequest(user.username, user.display_name, client.ip, device or "auto")
        txid = await push.ask_duo(push.method.start_call(context), user, client)
        return await push.open_challenge(
            session, user, client, (PHONE_CHALLENGE, purpose), txid, context.device
        )

    async def text_passcodes(self, session: SessionView, client: ClientInfo, device: str) -> str:
        """Has Duo text a batch of passcodes; returns what to tell the user."""
        await self._require(DuoFactor.SMS, session, client)
        push = self._push
        purpose, user = await push.challenger(session)
        await push.fatigue.limit_phone_requests(user, client, SMS_CHALLENGE, TOO_MANY)
        context = OutOfBandRequest(user.username, user.display_name, client.ip, device or "auto")
        outcome = await push.ask_duo(push.method.send_sms_passcodes(context), user, client)
        if outcome.status is not TransactionStatus.SENT:
            await push.audit_event(user, client, SMS_CHALLENGE, outcome.status.value)
            raise SecondFactorError(f"Duo did not send the text: {outcome.status_msg}")
        await push.open_challenge(
            session, user, client, (SMS_CHALLENGE, purpose), None, context.device, status="sent"
        )
        return SMS_SENT

    async def verify_passcode(
        self, session: SessionView, passcode: str, client: ClientInfo
    ) -> Completion:
        if not self.allows_passcodes():
            await self._refuse(DuoFactor.PASSCODE, session, client)
        return await self._push.verify_passcode(session, passcode, client)

    async def _require(self, factor: DuoFactor, session: SessionView, client: ClientInfo) -> None:
        if not self.allows(factor):
            await self._refuse(factor, session, client)

    async def _refuse(
        self, factor: DuoFactor, session: SessionView, client: ClientInfo
    ) -> NoReturn:
        user = await self._push.user_of(session)
        await self._push.audit_event(user, client, AUDIT_KINDS[factor], "not_allowed")
        raise FactorNotAllowed(
            f"Your administrator does not allow signing in with {NAMES[factor]}. "
            "Choose another way on the sign-in page."
        )
