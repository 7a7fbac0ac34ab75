"""A real SMTP server for tests: aiosmtpd on a free loopback port, in its own thread, keeping
every message it accepts. Variants speak STARTTLS or TLS with a throwaway CA made here with
`cryptography`, and can require a login."""

from __future__ import annotations

import email
import email.policy
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.servers import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None, "the message has no plain-text body"
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class CollectingHandler:
    """aiosmtpd calls `handle_DATA` once per accepted message, before it answers 250."""

    received: list[ReceivedMail] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(  # noqa: N802 (the name aiosmtpd calls)
        self, server: Any, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message)
        with self._lock:
            self.received.append(mail)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class ThrowawayTls:
    """A CA made for one test run, and a certificate it signed for localhost/127.0.0.1."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this CA (and only it) uses."""
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_throwaway_tls(directory: Path) -> ThrowawayTls:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("twofa test CA"))
        .issuer_name(_name("twofa test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ThrowawayTls(ca_cert.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: CollectingHandler
    controller: Controller
    running: bool = True

    @property
    def received(self) -> list[ReceivedMail]:
        return list(self.handler.received)

    def to(self, address: str) -> list[ReceivedMail]:
        return [mail for mail in self.received if address in mail.rcpt_tos]

    def stop(self) -> None:
        """Stops listening: connections are refused from now on."""
        if self.running:
            self.controller.stop()
            self.running = False


class _Accounts:
    """aiosmtpd's authenticator: one user name and password."""

    def __init__(self, username: str, password: str) -> None:
        self._expected = (username.encode(), password.encode())

    def __call__(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and tuple(auth_data) == self._expected
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535


@contextmanager
def smtp_server(
    *,
    starttls: ThrowawayTls | None = None,
    implicit_tls: ThrowawayTls | None = None,
    login: tuple[str, str] | None = None,
) -> Iterator[SmtpServer]:
    """`starttls`: offer and require STARTTLS; `implicit_tls`: TLS from the first byte;
    `login`: require AUTH with this user name and password (over TLS only, as servers do)."""
    handler = CollectingHandler()
    options: dict[str, Any] = {}
    if starttls is not None:
        options.update(tls_context=starttls.server_context(), require_starttls=True)
    if implicit_tls is not None:
        options.update(ssl_context=implicit_tls.server_context())
    if login is not None:
        # aiosmtpd counts only STARTTLS as TLS; with TLS from the first byte it is TLS too
        options.update(
            authenticator=_Accounts(*login),
            auth_required=True,
            auth_require_tls=implicit_tls is None,
        )
    controller = Controller(handler, hostname=HOST, port=free_port(), **options)
    controller.start()
    server = SmtpServer(HOST, controller.port, handler, controller)
    try:
        yield server
    finally:
        server.stop()


CODE_LINE = re.compile(r"Your verification code is: (\d{6})")


def code_in(body: str) -> str:
    found = CODE_LINE.search(body)
    assert found, f"no code in the message: {body!r}"
    return found.group(1)
