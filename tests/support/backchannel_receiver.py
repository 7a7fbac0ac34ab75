"""A stand-in for relying parties' back-channel logout endpoints (OpenID Connect Back-Channel
Logout 1.0): one small HTTP server on 127.0.0.1 that records every `logout_token` POSTed to
`/<party>/backchannel`, answering 200, or what a test asks of that party (an error status,
or holding the request until released, as a hung relying party would)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread


@dataclass(frozen=True)
class Received:
    party: str
    logout_token: str


@dataclass
class Receiver:
    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # by party; default 200
    held: set[str] = field(default_factory=set)  # parties that hang until `release`
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)

    def uri(self, party: str) -> str:
        return f"{self.base_url}/{party}/backchannel"

    def release(self) -> None:
        self._released.set()

    def tokens(self, party: str) -> list[str]:
        with self._lock:
            return [r.logout_token for r in self.received if r.party == party]

    def wait_for(self, party: str, count: int, timeout_s: float = 20.0) -> list[str]:
        """The first `count` logout tokens `party` received, waiting for them to arrive."""
        deadline = time.monotonic() + timeout_s
        while len(self.tokens(party)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{party} received {self.tokens(party)}, not {count}")
            time.sleep(0.05)
        return self.tokens(party)[:count]

    async def _backchannel(self, request: Request) -> Response:
        party = request.path_params["party"]
        form = await request.form()
        token = form.get("logout_token")
        with self._lock:
            self.received.append(Received(party, token if isinstance(token, str) else ""))
        if party in self.held:
            await asyncio.to_thread(self._released.wait)
        return PlainTextResponse("", status_code=self.statuses.get(party, 200))

    def app(self) -> Starlette:
        route = Route("/{party}/backchannel", self._backchannel, methods=["POST"])
        return Starlette(routes=[route])


@contextmanager
def backchannel_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with serve_in_thread(receiver.app()) as base_url:
        receiver.base_url = base_url
        try:
            yield receiver
        finally:
            receiver.release()  # a held request must not keep the server from stopping
