"""The keys that sign SAML responses and assertions: RSA 2048 with a self-signed certificate
(SAML trusts the certificate the metadata publishes, not a CA), made on first use, the private
half sealed at rest (security.sealing). A provider reads twofa's metadata when its admin says
so, so `rotate` announces the new key first: it is in the metadata at once and signs only
after `KEY_PREPUBLISH`, while the old key goes on signing; the old certificate then stays in
the metadata for `KEY_OVERLAP`. `rotate(immediately=True)` (a key thought stolen) switches at
once and providers must read the metadata again.

xmlsec1, which pysaml2 signs with, reads keys from files: an opened key is written once, 0600,
into a directory of this process's own (0700), and removed when the process ends."""

from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import CLI, ClientInfo
from twofa.security.sealing import Sealer
from twofa.services.state import audit
from twofa.storage.saml import SAML_KEY_PURPOSE, SamlSigningKeys
from twofa.storage.saml_tables import SamlSigningKeyRow

KEY_PREPUBLISH: Final = timedelta(days=7)
KEY_OVERLAP: Final = timedelta(days=1)  # far longer than an assertion lives
RSA_BITS: Final = 2048
CERTIFICATE_LIFETIME: Final = timedelta(days=3650)


@dataclass(frozen=True)
class KeyFiles:
    """A signing key as xmlsec1 reads it."""

    kid: str
    key_file: str
    cert_file: str


@dataclass(frozen=True)
class PublishedKeys:
    """The key that signs now, and the certificates of every published key (it first)."""

    signing: KeyFiles
    cert_files: tuple[str, ...]


def new_key_and_certificate(common_name: str, clock: Clock) -> tuple[str, str]:
    """An RSA key (PKCS#8 PEM) and its self-signed certificate (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = clock.now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem.decode(), certificate.public_bytes(serialization.Encoding.PEM).decode()


class _KeyDirectory:
    """Where opened keys are written for xmlsec1; one per process."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="twofa-saml-keys-"))  # 0700
            atexit.register(shutil.rmtree, self._path, True)
        return self._path


_DIRECTORY = _KeyDirectory()


class SamlKeyService:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock, sealer: Sealer) -> None:
        self._db = db
        self._clock = clock
        self._sealer = sealer
        self._files: dict[str, KeyFiles] = {}  # by kid: a key never changes once made

    def _opened(self, row: SamlSigningKeyRow) -> KeyFiles:
        files = self._files.get(row.kid)
        if files is None:
            folder = _DIRECTORY.path()
            key_file, cert_file = folder / f"{row.kid}.key", folder / f"{row.kid}.crt"
            key_file.touch(mode=0o600)
            key_file.write_text(self._sealer.open(row.private_key_sealed, SAML_KEY_PURPOSE))
            cert_file.write_text(row.certificate_pem)
            files = KeyFiles(row.kid, str(key_file), str(cert_file))
            self._files[row.kid] = files
        return files

    def _new_row(self, signs_from: datetime) -> SamlSigningKeyRow:
        kid = f"saml-{secrets.token_hex(8)}"
        key_pem, certificate_pem = new_key_and_certificate(f"twofa SAML {kid}", self._clock)
        return SamlSigningKeyRow(
            kid=kid,
            private_key_sealed=self._sealer.seal(key_pem, SAML_KEY_PURPOSE),
            certificate_pem=certificate_pem,
            created_at=self._clock.now(),
            signs_from=signs_from,
        )

    async def _published_rows(self) -> list[SamlSigningKeyRow]:
        now = self._clock.now()
        async with self._db.begin() as db:
            keys = SamlSigningKeys(db)
            rows = list(await keys.published(now - KEY_OVERLAP))
            if not any(row.retired_at is None for row in rows):
                made = self._new_row(signs_from=now)
                keys.add(made)
                rows.insert(0, made)
            return rows

    async def published(self) -> PublishedKeys:
        """The key that signs now (the newest whose time has come and not gone), and every
        certificate of the metadata: it first, then the announced and the retiring ones."""
        now = self._clock.now()
        rows = await self._published_rows()
        signing_now = [
            row
            for row in rows
            if row.signs_from <= now and (row.retired_at is None or row.retired_at > now)
        ]
        chosen = max(signing_now or rows, key=lambda row: (row.signs_from, row.kid))
        signing = self._opened(chosen)
        others = [self._opened(row).cert_file for row in rows if row.kid != signing.kid]
        return PublishedKeys(signing, (signing.cert_file, *others))

    async def rotate(
        self, *, actor: str, client: ClientInfo = CLI, immediately: bool = False
    ) -> tuple[str, datetime]:
        """A new key, in the metadata now, signing from the time returned (now when
        `immediately`); the keys in use sign until then. The new key's kid and that time."""
        now = self._clock.now()
        starts = now if immediately else now + KEY_PREPUBLISH
        async with self._db.begin() as db:
            keys = SamlSigningKeys(db)
            await keys.retire_all(starts)
            row = self._new_row(signs_from=starts)
            keys.add(row)
            audit.record(
                db, self._clock, "saml_keys", "rotated", username=actor, client=client,
                kid=row.kid, signs_from=starts.isoformat(),
            )  # fmt: skip
            return row.kid, starts
