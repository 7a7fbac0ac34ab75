"""Settings an admin edits in the console: the Duo application (Advanced Settings, shaped in
services.settings.duo) and the 2FA rules (Two Factor Settings, in services.settings.two_factor).
They live in the database so every gateway node sees them; each save is audited, and the Duo
secret key is sealed at rest and never shown again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import DuoFactor, DuoSettings
from twofa.domain.client import ClientInfo
from twofa.duo import DuoAuthClient, DuoCredentials, DuoEndpoint, DuoError, DuoTimeouts
from twofa.errors import Refused
from twofa.methods.registry import DUO_PUSH, LOCAL_METHOD_CODES
from twofa.security.sealing import Sealer
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.duo import (
    DUO_KEY,
    SKEY_PURPOSE,
    ConnectionTest,
    DuoConsoleConfig,
    DuoEdit,
    duo_config_from_json,
    duo_config_to_json,
    duo_field_problems,
    failure_problem,
    prove_duo_keys,
)
from twofa.services.settings.two_factor import (
    TWO_FACTOR_KEY,
    BackupPolicy,
    TwoFactorConfig,
    two_factor_config_from_json,
    two_factor_config_to_json,
)
from twofa.services.state import audit
from twofa.storage.repositories import ConsoleSettings as ConsoleSettingsRepo

KNOWN_METHODS: Final = (DUO_PUSH, *LOCAL_METHOD_CODES)


class SettingsRejected(Refused):
    """The edit was not saved; `problems` maps each field to what is wrong with it. Refused,
    not Invalid: the edit is well-formed and fails twofa's checks (Duo refuses the keys, a
    method that does not exist), which the API tells apart from a malformed body."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {why}" for name, why in problems.items()))

    @property
    def fields(self) -> Mapping[str, str]:
        return self.problems


class ConsoleSettingsService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        sealer: Sealer,
        http: httpx.AsyncClient,
        file_duo: DuoSettings,
        offered_methods: tuple[str, ...] = KNOWN_METHODS,
        cache: SettingsCache | None = None,
        *,
        allow_custom_duo_host: bool = False,
    ) -> None:
        """`allow_custom_duo_host` is the settings' `duo_custom_host_allowed`: whether the
        Duo API hostname may be other than one of Duo's (services.settings.duo)."""
        self._offered = offered_methods
        self._allow_custom_duo_host = allow_custom_duo_host
        self.cache = cache or SettingsCache(db, clock)
        self._db = db
        self._clock = clock
        self._sealer = sealer
        self._http = http
        self._file_duo = file_duo

    @property
    def allows_custom_duo_host(self) -> bool:
        return self._allow_custom_duo_host

    @property
    def offered_methods(self) -> tuple[str, ...]:
        """Methods this gateway can run (Duo Push and the registered local methods)."""
        return self._offered

    async def duo(self) -> DuoConsoleConfig | None:
        """The console's Duo settings, or None while the admin has never saved any."""
        snapshot = await self.cache.snapshot()
        config: DuoConsoleConfig | None = snapshot.parsed(
            DUO_KEY, lambda value: duo_config_from_json(value) if value is not None else None
        )
        return config

    async def section(self, key: str) -> dict[str, Any] | None:
        """One saved section as stored (a private copy), or None if never saved."""
        return (await self.cache.snapshot()).value(key)

    async def effective_duo(self) -> DuoSettings:
        """What the gateway uses: the console's settings once saved, else the settings file."""
        config = await self.duo()
        if config is None:
            return self._file_duo
        return self._file_duo.model_copy(
            update={
                "ikey": config.ikey,
                "skey": SecretStr(self._sealer.open(config.skey_sealed, SKEY_PURPOSE)),
                "api_hostname": config.api_hostname,
                "failmode": config.failmode,
                "autopush": config.autopush,
                "push_type": config.push_type,
                "application_name": config.application_name,
                "pushes_per_minute": config.pushes_per_minute,
                "pushes_per_day": config.pushes_per_day,
                "fraud_pause_minutes": config.fraud_pause_minutes,
                "allowed_factors": config.allowed_factors,
            }
        )

    async def version(self) -> int:
        """Changes whenever any console setting is saved; nodes compare it to reload. Read
        from the cache: a save elsewhere shows within about a second, one here at once."""
        return (await self.cache.snapshot()).version

    async def _stored(self, key: str) -> dict[str, Any] | None:
        """The section as the database holds it now: a save audits the true "before",
        not this node's copy of up to a second ago."""
        async with self._db.begin() as db:
            row = await ConsoleSettingsRepo(db).get(key)
        return dict(row.value) if row else None

    async def save_duo(self, edit: DuoEdit, actor: str, client: ClientInfo) -> DuoConsoleConfig:
        stored = await self._stored(DUO_KEY)
        before = duo_config_from_json(stored) if stored is not None else None
        problems = duo_field_problems(
            edit,
            keeps_secret=bool(before and before.has_secret),
            allow_custom_host=self._allow_custom_duo_host,
        )
        if problems:
            raise SettingsRejected(problems)
        skey = edit.skey.strip() or (
            self._sealer.open(before.skey_sealed, SKEY_PURPOSE) if before else ""
        )
        proof = await prove_duo_keys(
            self._http,
            edit.ikey.strip(),
            skey,
            edit.api_hostname,
            self._clock.now().timestamp(),
            allow_custom_host=self._allow_custom_duo_host,
        )
        if proof:
            await self._audit_rejected(actor, client, proof)
            raise SettingsRejected(proof)
        config = DuoConsoleConfig(
            ikey=edit.ikey.strip(),
            skey_sealed=self._sealer.seal(skey, SKEY_PURPOSE),
            api_hostname=edit.api_hostname.strip(),
            failmode=edit.failmode,
            autopush=edit.autopush,
            push_type=edit.push_type.strip(),
            application_name=edit.application_name.strip(),
            pushes_per_minute=edit.pushes_per_minute,
            pushes_per_day=edit.pushes_per_day,
            fraud_pause_minutes=edit.fraud_pause_minutes,
            allowed_factors=tuple(f for f in DuoFactor if f in edit.allowed_factors),
        )
        await self._put(
            DUO_KEY,
            duo_config_to_json(config),
            actor,
            client,
            duo_config_to_json(before) if before else None,
        )
        return config

    async def duo_edit_base(self) -> DuoEdit:
        """What an edit starts from: the console's Duo settings once saved, else the settings
        file's. The secret is never part of it (an empty `skey` keeps the stored one)."""
        saved = await self.duo()
        source: DuoConsoleConfig | DuoSettings = saved if saved is not None else self._file_duo
        return DuoEdit(
            ikey=source.ikey,
            api_hostname=source.api_hostname,
            failmode=source.failmode,
            autopush=source.autopush,
            push_type=source.push_type,
            application_name=source.application_name,
            pushes_per_minute=source.pushes_per_minute,
            pushes_per_day=source.pushes_per_day,
            fraud_pause_minutes=source.fraud_pause_minutes,
            allowed_factors=source.allowed_factors,
        )

    async def save_duo_from_settings_file(self, actor: str, client: ClientInfo) -> DuoConsoleConfig:
        """Copies the settings file's Duo application into the console, proven like any save.
        In the demo the file names the bundled simulator: this is "Use the bundled simulator"."""
        file_duo = self._file_duo
        edit = DuoEdit(
            ikey=file_duo.ikey,
            api_hostname=file_duo.api_hostname,
            skey=file_duo.skey.get_secret_value(),
            failmode=file_duo.failmode,
            autopush=file_duo.autopush,
            push_type=file_duo.push_type,
            application_name=file_duo.application_name,
            pushes_per_minute=file_duo.pushes_per_minute,
            pushes_per_day=file_duo.pushes_per_day,
            fraud_pause_minutes=file_duo.fraud_pause_minutes,
            allowed_factors=file_duo.allowed_factors,
        )
        return await self.save_duo(edit, actor, client)

    async def test_connection(self) -> ConnectionTest:
        """Proves the keys in force now the way Save does, then reads Duo's clock once more
        for the skew the admin sees."""
        duo = await self.effective_duo()
        if not duo.configured:
            return ConnectionTest({"ikey": "Duo Push is not configured yet: save the keys first"})
        skey = duo.skey.get_secret_value()
        problems = await prove_duo_keys(
            self._http,
            duo.ikey,
            skey,
            duo.api_hostname,
            self._clock.now().timestamp(),
            allow_custom_host=self._allow_custom_duo_host,
        )
        if problems:
            return ConnectionTest(problems)
        endpoint = DuoEndpoint.parse(duo.api_hostname, allow_custom_host=True)  # proven above
        client = DuoAuthClient(
            self._http,
            credentials=DuoCredentials(duo.ikey, skey),
            endpoint=endpoint,
            timeouts=DuoTimeouts(connect=5, read=10, long_poll_read=10),
        )
        try:
            duo_time = await client.ping()
        except DuoError as exc:
            return ConnectionTest(failure_problem(endpoint, "ping", exc))
        return ConnectionTest({}, clock_skew_s=duo_time - self._clock.now().timestamp())

    async def two_factor(self) -> TwoFactorConfig:
        snapshot = await self.cache.snapshot()
        config: TwoFactorConfig = snapshot.parsed(
            TWO_FACTOR_KEY,
            lambda value: (
                two_factor_config_from_json(value) if value is not None else TwoFactorConfig()
            ),
        )
        return config

    async def save_two_factor(
        self, config: TwoFactorConfig, actor: str, client: ClientInfo
    ) -> TwoFactorConfig:
        problems: dict[str, str] = {}
        chosen = (*config.methods, *config.backup_methods)
        unknown = [m for m in chosen if m not in self._offered]
        if unknown:
            problems["methods"] = f"unknown methods: {', '.join(unknown)}"
        if not config.methods:
            problems["methods"] = "choose at least one method"
        if config.first_method not in config.methods:
            problems["first_method"] = "must be one of the allowed methods"
        if config.backup is not BackupPolicy.NONE and not config.backup_methods:
            problems["backup_methods"] = "choose the backup method users set up"
        if config.first_method in config.backup_methods:
            problems["backup_methods"] = (
                "a method cannot back itself up: a backup is for when the first method is lost"
            )
        for name in ("grace_postponements", "grace_days", "remember_device_days"):
            if not 0 <= getattr(config, name) <= 365:
                problems[name] = "between 0 and 365"
        if problems:
            raise SettingsRejected(problems)
        stored = await self._stored(TWO_FACTOR_KEY)
        before = two_factor_config_from_json(stored) if stored is not None else TwoFactorConfig()
        await self._put(
            TWO_FACTOR_KEY,
            two_factor_config_to_json(config),
            actor,
            client,
            two_factor_config_to_json(before),
        )
        return config

    async def _put(
        self,
        key: str,
        value: dict[str, Any],
        actor: str,
        client: ClientInfo,
        before: dict[str, Any] | None,
    ) -> None:
        """Last write wins per section; both writes are audited with before and after."""
        async with self._db.begin() as db:
            await ConsoleSettingsRepo(db).upsert(key, value, self._clock.now(), actor)
            audit.record(
                db,
                self._clock,
                f"settings_{key}",
                "saved",
                username=actor,
                client=client,
                before=_redacted(before),
                after=_redacted(value),
            )
        self.cache.invalidate()

    async def _audit_rejected(
        self, actor: str, client: ClientInfo, problems: dict[str, str]
    ) -> None:
        async with self._db.begin() as db:
            audit.record(
                db,
                self._clock,
                "settings_duo",
                "rejected",
                username=actor,
                client=client,
                problems=problems,
            )


def _redacted(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Audit shows whether a secret changed, never the secret."""
    if value is None:
        return None
    return {
        k: ("(set)" if v else "(not set)") if k == "skey_sealed" else v for k, v in value.items()
    }
