"""E-mail over SMTP with the mail server the admin keeps in the console, read afresh for every
message so a change applies to the next code. `SmtpSettingsService` gets, saves (validated,
password sealed, audited) and tests those settings; `SmtpMailer` is the `Mailer` the factor
service sends codes with: users get one plain message, the log gets the cause.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Final

import aiosmtplib
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.domain.smtp_settings import (
    PASSWORD_PURPOSE,
    SMTP_KEY,
    SmtpConfig,
    SmtpEdit,
    SmtpSecurity,
    address_problem,
    config_from,
    config_from_json,
    config_to_json,
    redacted,
    smtp_problems,
)
from twofa.errors import Unavailable
from twofa.methods.base import Delivery
from twofa.security.sealing import Sealer, SealError
from twofa.services.second_factor.pipeline import DeliveryFailed
from twofa.services.settings.console import SettingsRejected
from twofa.services.state import audit
from twofa.storage.repositories import ConsoleSettings

log = logging.getLogger("twofa.email")

SEND_FAILED: Final = (
    "We could not send the e-mail right now. Use another method or try again later."
)
NOT_CONFIGURED: Final = "E-mail is not set up on this server yet. Use another method."
TEST_SUBJECT: Final = "twofa test message"


class SmtpProblem(Unavailable):
    """A message was not sent; the text says why in words an admin can act on."""


class SmtpNotConfigured(SmtpProblem):
    """No mail server has been saved in the console yet."""


@dataclass(frozen=True)
class SendTestOutcome:
    sent: bool
    message: str


def build_message(config: SmtpConfig, delivery: Delivery, clock: Clock) -> EmailMessage:
    """Plain text, UTF-8, with the Date and Message-ID headers spam filters look for."""
    message = EmailMessage()
    try:
        message["From"] = config.from_address
        message["To"] = delivery.to
        message["Subject"] = delivery.subject
    except ValueError as exc:  # a line break in a header: never let it through
        raise SmtpProblem(f"the message has an unusable header: {exc}") from exc
    message["Date"] = format_datetime(clock.now())
    domain = parseaddr(config.from_address)[1].rpartition("@")[2] or "twofa.invalid"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(delivery.body)
    return message


def explain(exc: BaseException, config: SmtpConfig) -> str:
    """What went wrong, for the admin: which step and what the server said."""
    where = f"{config.host}:{config.port}"
    if isinstance(exc, aiosmtplib.SMTPConnectError) and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__  # aiosmtplib wraps the socket's error: name that one
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return f"{where} refused the user name or password ({exc.code} {exc.message})"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return f"{where} refused the sender address {exc.sender} ({exc.code} {exc.message})"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return f"{where} refused the recipient {exc.recipient} ({exc.code} {exc.message})"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{r.recipient} ({r.code} {r.message})" for r in exc.recipients)
        return f"{where} refused the recipient {refused}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{where} answered {exc.code} {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {config.timeout_s} s"
    if isinstance(exc, ssl.SSLError):
        return (
            f"the TLS connection to {where} failed: {exc.reason or exc} (check the security "
            "setting and the server's certificate)"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot find the host {config.host} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return f"cannot connect to {where}: {os.strerror(exc.errno).lower()}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError):
        return f"{where} closed the connection: {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPException):  # e.g. no STARTTLS or AUTH on offer
        return (
            f"{where} cannot do what these settings ask: {exc.message.rstrip('.')} (check the "
            "security setting and the user name)"
        )
    return f"sending through {where} failed: {exc}"


class SmtpSettingsService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        sealer: Sealer,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls` is the context that checks the mail server's certificate; None uses the
        system's trusted CAs (tests pass one that trusts their throwaway CA)."""
        self._db = db
        self._clock = clock
        self._sealer = sealer
        self._tls = tls

    async def get(self) -> SmtpConfig | None:
        """The saved mail server, or None while the admin has never saved one."""
        async with self._db.begin() as db:
            row = await ConsoleSettings(db).get(SMTP_KEY)
        return config_from_json(row.value) if row else None

    async def save(self, edit: SmtpEdit, actor: str, client: ClientInfo) -> SmtpConfig:
        """Saves a valid edit or raises SettingsRejected naming every problem at once."""
        before = await self.get()
        problems = smtp_problems(edit, keeps_password=bool(before and before.has_password))
        if problems:
            raise SettingsRejected(problems)
        if edit.password:
            sealed = self._sealer.seal(edit.password, PASSWORD_PURPOSE)
        else:
            sealed = before.password_sealed if before else ""
        config = config_from(edit, sealed)
        after = config_to_json(config)
        async with self._db.begin() as db:
            await ConsoleSettings(db).upsert(SMTP_KEY, after, self._clock.now(), actor)
            audit.record(
                db,
                self._clock,
                f"settings_{SMTP_KEY}",
                "saved",
                username=actor,
                client=client,
                before=redacted(config_to_json(before) if before else None),
                after=redacted(after),
            )
        return config

    async def send(self, delivery: Delivery) -> None:
        """Sends one message with the settings saved now; SmtpProblem says what failed."""
        config = await self.get()
        if config is None:
            raise SmtpNotConfigured("no mail server is set up: save one in the console first")
        message = build_message(config, delivery, self._clock)
        password = self._password(config)
        try:
            await aiosmtplib.send(
                message,
                username=config.username or None,
                password=password,
                **self._connection(config),
            )
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise SmtpProblem(explain(exc, config)) from exc

    async def check_login(self) -> SmtpConfig:
        """Connects, secures and signs in as sending would, then leaves without sending
        anything (`twofa doctor`); SmtpProblem says what failed."""
        config = await self.get()
        if config is None:
            raise SmtpNotConfigured("no mail server is set up")
        password = self._password(config)
        server = aiosmtplib.SMTP(**self._connection(config))
        try:
            async with server:
                if config.username and password is not None:
                    await server.login(config.username, password)
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise SmtpProblem(explain(exc, config)) from exc
        return config

    def _connection(self, config: SmtpConfig) -> dict[str, Any]:
        """How to reach and secure the server, the same for sending and for checking."""
        return {
            "hostname": config.host,
            "port": config.port,
            "use_tls": config.security is SmtpSecurity.TLS,
            "start_tls": config.security is SmtpSecurity.STARTTLS,  # never opportunistic
            "timeout": config.timeout_s,
            "tls_context": self._tls,
        }

    def _password(self, config: SmtpConfig) -> str | None:
        try:
            return (
                self._sealer.open(config.password_sealed, PASSWORD_PURPOSE)
                if config.password_sealed
                else None
            )
        except SealError as exc:
            raise SmtpProblem(f"{exc}; save the SMTP password again") from exc

    async def send_test(self, to: str, actor: str, client: ClientInfo) -> SendTestOutcome:
        """Sends a test message to `to` and says, in plain words, whether it went out."""
        problem = address_problem(to.strip()) if to.strip() else "type the address to send to"
        if problem:
            return SendTestOutcome(False, f"The test address is not usable: {problem}.")
        body = (
            f"This is a test message from twofa, sent by {actor} from the console.\n"
            "If you are reading it, twofa can send sign-in codes by e-mail.\n"
        )
        try:
            await self.send(Delivery(to=to.strip(), subject=TEST_SUBJECT, body=body))
        except SmtpProblem as exc:
            reason = str(exc).rstrip(".")
            outcome = SendTestOutcome(False, f"The test e-mail was not sent: {reason}.")
        else:
            outcome = SendTestOutcome(True, f"Sent a test e-mail to {to.strip()}.")
        async with self._db.begin() as db:
            audit.record(
                db,
                self._clock,
                f"settings_{SMTP_KEY}",
                "test_sent" if outcome.sent else "test_failed",
                username=actor,
                client=client,
                to=to.strip(),
                result=outcome.message,
            )
        return outcome


class SmtpMailer:
    """The factor service's `Mailer`: any failure becomes `DeliveryFailed` with the message
    users see, and the cause goes to the log (the service audits the failure)."""

    def __init__(self, settings: SmtpSettingsService) -> None:
        self._settings = settings

    async def send(self, delivery: Delivery) -> None:
        try:
            await self._settings.send(delivery)
        except SmtpNotConfigured as exc:
            log.warning("e-mail code not sent: %s", exc)
            raise DeliveryFailed(NOT_CONFIGURED) from exc
        except SmtpProblem as exc:
            log.warning("e-mail code to %s not sent: %s", _domain_of(delivery.to), exc)
            raise DeliveryFailed(SEND_FAILED) from exc


def _domain_of(address: str) -> str:
    """Logs name the recipient's domain only: enough to spot a pattern, no address kept."""
    return "…@" + address.rpartition("@")[2]
