"""A key rotation that goes wrong, on SQLite and PostgreSQL: stopped between batches or in the
middle of one, then run again, it finishes with every secret intact; a secret a running gateway
saves or deletes while the rotation works is never overwritten with the older value."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import RunningSimulator
from tests.integration.test_key_rotation import (
    NEW,
    OLD,
    SMTP_PASSWORD,
    Sealed,
    Site,
    save_duo_and_smtp,
    stored,
)
from tests.support.email_otp_flow import smtp_edit
from tests.support.smtp import SmtpServer
from twofa.domain.client import NO_CLIENT
from twofa.domain.smtp_settings import PASSWORD_PURPOSE
from twofa.methods.base import NewCredential
from twofa.security.sealing import Sealer
from twofa.services.admin.key_rotation import KeyRotationService, RotationProgress
from twofa.services.admin.sealed_places import (
    ChallengeSecretsPlace,
    CredentialSecretsPlace,
    SealedHolder,
    SealedPlace,
    SettingSecretsPlace,
)
from twofa.services.runtime import Gateway
from twofa.services.second_factor import credential_store
from twofa.services.second_factor.credential_store import secret_purpose
from twofa.services.settings.duo import SKEY_PURPOSE
from twofa.storage.repositories import Users

pytestmark = pytest.mark.integration
TOTP_USERS = 6


class Interrupted(Exception):
    """Stands for the admin's Ctrl-C, a killed process, a lost database connection."""


@pytest.fixture
def site(database_url: str, simulator: RunningSimulator, tmp_path: Path) -> Site:
    return Site(database_url, simulator, 0, tmp_path / "secret_key")


async def seed_secrets(site: Site, mail: SmtpServer) -> dict[str, str]:
    """With the old key: users with an authenticator app (stored as the pipeline stores a
    finished set-up), the Duo key and the SMTP password. Returns each value's plaintext by
    where it is: "duo", "smtp", "credential <id>" (user0's is the first)."""
    settings = site.with_keys(OLD)
    await save_duo_and_smtp(settings, mail)
    plaintexts = {"duo": site.simulator.skey, "smtp": SMTP_PASSWORD}
    gateway = await Gateway.start(settings)
    try:
        for number in range(TOTP_USERS):
            await gateway.accounts.add_user(f"user{number}", None)
            seed = secrets.token_hex(10).upper()
            async with gateway.db.begin() as db:
                user = await Users(db).by_name(f"user{number}")
                assert user is not None
                credential_id = await credential_store.store(
                    db,
                    Sealer([OLD]),
                    user.id,
                    "totp",
                    NewCredential(label="Authenticator app", secret=seed),
                    gateway.clock.now(),
                )
            plaintexts[f"credential {credential_id}"] = seed
    finally:
        await gateway.close()
    return plaintexts


def opened(values: Sealed, sealer: Sealer) -> dict[str, str]:
    """Every stored value opened: what each place holds now."""
    found = {
        f"credential {credential_id}": sealer.open(sealed, secret_purpose(credential_id))
        for credential_id, sealed in values.credentials.items()
    }
    found["duo"] = sealer.open(values.duo_skey, SKEY_PURPOSE)
    found["smtp"] = sealer.open(values.smtp_password, PASSWORD_PURPOSE)
    return found


def current(values: Sealed, sealer: Sealer) -> int:
    return sum(sealer.is_current(value) for value in values.all())


class FailsOnWrite:
    """A place whose `nth` row write fails inside its batch's transaction."""

    def __init__(self, place: SealedPlace, nth: int) -> None:
        self._place = place
        self._nth = nth
        self._writes = 0
        self.title = place.title

    def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        return self._place.holders(db, batch_size, now, skip_head)

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        self._writes += 1
        written = await self._place.rewrite(db, holder, resealed)
        if self._writes == self._nth:
            raise Interrupted(f"the connection died after writing {holder.where}")
        return written

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        return await self._place.heads(db, now)


async def test_interrupted_rotation_finishes_with_nothing_lost(
    site: Site, mail: SmtpServer
) -> None:
    plaintexts = await seed_secrets(site, mail)
    both, new_only = Sealer([NEW, OLD]), Sealer([NEW])
    gateway = await Gateway.start(site.with_keys(NEW, OLD))
    try:

        def stop_after_three_batches(progress: RotationProgress) -> None:
            if progress.batches == 3:
                raise Interrupted("Ctrl-C")

        with pytest.raises(Interrupted):
            await gateway.key_rotation.rotate(
                actor="test", batch_size=1, progress=stop_after_three_batches
            )
        between_batches = await stored(gateway.settings)

        # the next run dies inside its first batch, after writing one of its two rows
        places = (
            FailsOnWrite(CredentialSecretsPlace(), nth=2),
            SettingSecretsPlace(),
            ChallengeSecretsPlace(),
        )
        failing = KeyRotationService(gateway.db, gateway.clock, both, places)
        with pytest.raises(Interrupted):
            await failing.rotate(actor="test", batch_size=2)
        inside_a_batch = await stored(gateway.settings)

        result = await gateway.key_rotation.rotate(actor="test", batch_size=1)
        finished = await stored(gateway.settings)
    finally:
        await gateway.close()

    total = len(plaintexts)
    assert current(between_batches, both) == 3  # three batches of one committed
    assert opened(between_batches, both) == plaintexts  # old and new alike still open
    assert current(inside_a_batch, both) == 3  # the broken batch was rolled back whole
    assert opened(inside_a_batch, both) == plaintexts
    assert (result.finished, result.resealed, result.changed_meanwhile) == (True, total - 3, 0)
    assert current(finished, new_only) == total
    assert opened(finished, new_only) == plaintexts  # the old key is no longer needed


class GatewayWritesMeanwhile:
    """Between the rotation's read of a batch and its write, the running gateway (its old
    key list, not yet restarted) saves a new SMTP password and resets a user's 2FA."""

    def __init__(self, place: SealedPlace, write: Callable[[], Awaitable[None]]) -> None:
        self._place = place
        self._write = write
        self.title = place.title

    async def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        async for batch in self._place.holders(db, batch_size, now, skip_head):
            await self._write()
            yield batch

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        return await self._place.rewrite(db, holder, resealed)

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        return await self._place.heads(db, now)


async def test_a_secret_saved_while_rotating_is_not_overwritten_with_the_old_one(
    site: Site, mail: SmtpServer
) -> None:
    plaintexts = await seed_secrets(site, mail)
    running = await Gateway.start(site.with_keys(OLD))  # a gateway not restarted yet
    rotating = await Gateway.start(site.with_keys(NEW, OLD))
    try:

        async def new_smtp_password() -> None:
            edit = smtp_edit(mail, username="mailer", password="saved-meanwhile-1")
            await running.smtp.save(edit, "another-admin", NO_CLIENT)

        async def reset_user0() -> None:
            await running.accounts.reset_second_factor("user0", NO_CLIENT)

        places = (
            GatewayWritesMeanwhile(CredentialSecretsPlace(), reset_user0),
            GatewayWritesMeanwhile(SettingSecretsPlace(), new_smtp_password),
            ChallengeSecretsPlace(),
        )
        service = KeyRotationService(rotating.db, rotating.clock, Sealer([NEW, OLD]), places)
        first = await service.rotate(actor="test", batch_size=TOTP_USERS + 2)
        after_first = await stored(rotating.settings)
        again = await rotating.key_rotation.rotate(actor="test")
        after_again = await stored(rotating.settings)
    finally:
        await running.close()
        await rotating.close()

    both, new_only = Sealer([NEW, OLD]), Sealer([NEW])
    expected = {**plaintexts, "smtp": "saved-meanwhile-1"}
    del expected[next(where for where in plaintexts if where.startswith("credential "))]
    assert first.changed_meanwhile == 2  # the SMTP row and the deleted credential
    assert not first.finished  # the gateway sealed the new password with its old key
    assert first.after.stale == 1
    assert opened(after_first, both) == expected  # nothing overwritten, nothing brought back
    assert again.finished
    assert opened(after_again, new_only) == expected
