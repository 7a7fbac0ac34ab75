"""A TCP proxy a test puts between one gateway and a server it talks to (Redis, PostgreSQL),
to break the path the ways networks break: stall it without closing anything (a cut path
sends no reset), cut it (every connection reset, new ones refused) and restore it, or hold
one chunk that carries a given pattern (a command on its way to the server, a row on its
way back) for a while or until released. It runs in the test's event loop (or a thread of
its own), on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.support.servers import free_port

CHUNK = 65_536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side and the server's."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    held_down: bool = False  # server-to-client held since a chunk matched (until released)

    def abort(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._released_down = asyncio.Event()
        self.accepted = 0
        # A client-to-server chunk holding this pattern waits `hold_up_seconds` first.
        self.hold_up_pattern: bytes | None = None
        self.hold_up_seconds = 0.0
        self.held_up = 0  # how many chunks were held so
        # A server-to-client chunk holding this pattern waits for `release_down()`, and so
        # does everything after it on that connection.
        self.hold_down_pattern: bytes | None = None
        self.held_down = asyncio.Event()  # set once a chunk was caught

    @property
    def url_host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        self.resume()
        self.release_down()
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.abort()
        tasks = [task for link in self._links for task in link.tasks]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()

    def stall(self) -> None:
        """Nothing passes either way any more; every connection stays open."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        """Every connection reset, and nobody listens on the port until `restore`."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.abort()
        await asyncio.sleep(0)

    async def restore(self) -> None:
        await self.start()

    def release_down(self) -> None:
        self._released_down.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, server_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, server_writer, link, upward=True)),
            asyncio.create_task(self._pump(server_reader, writer, link, upward=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upward: bool,
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if upward and self.hold_up_pattern and self.hold_up_pattern in data:
                    self.held_up += 1
                    await asyncio.sleep(self.hold_up_seconds)
                if not upward and self.hold_down_pattern and self.hold_down_pattern in data:
                    link.held_down = True
                    self.held_down.set()
                if link.held_down:
                    await self._released_down.wait()
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()


@asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            await proxy.close()


@contextlib.contextmanager
def tcp_proxy_in_thread(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    """The same proxy in an event loop of its own thread: for a gateway served in a thread
    (tests.support.servers), whose start-up blocks the test's loop while the gateway reads
    its database through the proxy. Its attributes (the hold-up) are set from the test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tcp-proxy", daemon=True)
    thread.start()

    async def opened() -> TcpProxy:
        started = TcpProxy(target_host, target_port)
        await started.start()
        return started

    proxy = asyncio.run_coroutine_threadsafe(opened(), loop).result(10)
    try:
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
