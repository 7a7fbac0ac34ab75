"""Builds the gateway's object graph from settings, once, at start-up (and for each CLI call).

Nothing here is global: the web app and the CLI each hold one `Gateway` and pass it on.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from twofa.clock import Clock, SystemClock
from twofa.config import Settings
from twofa.directories.local import LocalDirectory
from twofa.duo import DuoAuthClient, DuoCredentials, DuoEndpoint, DuoTimeouts, make_http_client
from twofa.methods.duo_push import DuoPushMethod
from twofa.services.accounts import AccountService
from twofa.services.duo_push import DuoPushService
from twofa.services.login import LoginService
from twofa.services.sessions import SessionService
from twofa.storage.database import check_schema, create_engine, session_factory

DUO_CONNECTIONS = 2000  # pending pushes one process may follow at once


@dataclass
class Gateway:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    sessions: SessionService
    login: LoginService
    accounts: AccountService
    duo: DuoPushService | None
    _http: httpx.AsyncClient | None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        verify_schema: bool = True,
        duo_http: httpx.AsyncClient | None = None,
    ) -> Gateway:
        """`verify_schema` refuses an unmigrated or newer database with a clear message."""
        clock = clock or SystemClock()
        engine = create_engine(settings.database_url)
        if verify_schema:
            try:
                await check_schema(engine)
            except Exception:
                await engine.dispose()
                raise
        db = session_factory(engine)
        sessions = SessionService(db, clock, settings)
        login = LoginService(db, sessions, LocalDirectory(), clock, settings)
        duo, http = None, duo_http
        if settings.duo.configured:
            endpoint = DuoEndpoint.parse(settings.duo.api_hostname)
            http = http or make_http_client(endpoint, max_connections=DUO_CONNECTIONS)
            client = DuoAuthClient(
                http,
                credentials=DuoCredentials(settings.duo.ikey, settings.duo.skey.get_secret_value()),
                endpoint=endpoint,
                timeouts=DuoTimeouts(
                    connect=settings.duo.timeout_s,
                    read=settings.duo.timeout_s,
                    long_poll_read=settings.duo.long_poll_s + settings.duo.timeout_s,
                ),
            )
            method = DuoPushMethod(client, settings.duo)
            duo = DuoPushService(db, method, sessions, clock, settings.duo)
        return cls(
            settings, clock, engine, db, sessions, login, AccountService(db, clock), duo, http
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.engine.dispose()
