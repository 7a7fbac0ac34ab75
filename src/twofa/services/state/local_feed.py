"""The change feed between the processes of one machine on SQLite (the workers of
`twofa serve --workers`, and a `twofa` command run beside them): a private directory named
after the database file holds one Unix datagram socket per process, and a change is sent to
each. (It is under the temporary directory, not beside the database: a socket's path may not
be longer than 107 bytes.)

A datagram is delivered whole or refused at once, never dropped in flight: a sender that
finds a socket nobody reads (its process died) removes it; one that finds a socket whose
queue is full removes it too, and that process, seeing its socket gone at its next
look (four a second), knows it may have missed a change: its feed counts as lost, and it binds a
new socket (a new generation, see `feed_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from twofa.services.state.change_feed import ChangeFeed, batches
from twofa.services.state.feed_keys import FeedKeys
from twofa.services.state.feed_state import HEARTBEAT_S, FeedState
from twofa.storage.change_notes import Changes

SUFFIX: Final = ".sock"
MESSAGE_LIMIT: Final = 65_536
# Ten times a NOTIFY's batch: ~55 kB at most. A peer's queue holds few datagrams (the kernel's
# net.unix.max_dgram_qlen, often 10), so fewer, larger messages keep a large change in it.
MESSAGE_SCALE: Final = 10
log = logging.getLogger("twofa.change_feed")


def feed_directory(database_file: Path) -> Path:
    """The same for every process of one database file, whatever the working directory."""
    named = hashlib.sha256(str(database_file.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"twofa-feed-{named}"


def _private_directory(directory: Path) -> None:
    """Made for this user alone; one that another user made or can write is refused (it could
    remove this process's socket at will, or read what is sent)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    found = directory.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise PermissionError(f"{directory} is not a private directory of this user")


class LocalChangeFeed(ChangeFeed):
    kind = "local"

    def __init__(
        self,
        directory: Path,
        on_change: Callable[[Changes], None],
        state: FeedState | None = None,
        *,
        keys: FeedKeys,
    ) -> None:
        super().__init__(on_change, state, keys)
        self._directory = directory
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._own: Path | None = None

    def announce(self, changes: Changes) -> None:
        """Sends at once (a datagram on this machine never waits)."""
        try:
            peers = [p for p in self._directory.iterdir() if p.suffix == SUFFIX]
        except FileNotFoundError:
            return  # nobody listens yet
        for batch in batches(changes, scale=MESSAGE_SCALE):
            payload = self._sealed(batch).encode()
            for peer in peers:
                if peer != self._own:
                    self._send(payload, peer)

    def _send(self, payload: bytes, peer: Path) -> None:
        try:
            self._sender.sendto(payload, str(peer))
        except (ConnectionRefusedError, FileNotFoundError):
            _remove(peer)  # its process is gone
        except BlockingIOError:
            # It is not reading (stalled, or flooded): it would miss this change. Removing its
            # socket tells it so (it checks every second, and reads everything again meanwhile).
            log.warning("%s did not take a change in time: it is told to resynchronise", peer)
            _remove(peer)
        except OSError as exc:
            log.warning("could not send a change to %s: %s", peer, exc)

    async def _follow(self) -> None:
        _private_directory(self._directory)
        own = self._directory / f"{self.node}-{os.getpid()}{SUFFIX}"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.setblocking(False)
        try:
            receiver.bind(str(own))
            self._own = own
            bound = own.stat().st_ino
            self.state.connected()
            loop = asyncio.get_running_loop()
            while True:
                try:
                    raw = await asyncio.wait_for(
                        loop.sock_recv(receiver, MESSAGE_LIMIT), HEARTBEAT_S
                    )
                except TimeoutError:
                    if not _is_socket(own, bound):
                        raise ConnectionError("this process's feed socket was removed") from None
                    self.state.heard()  # nothing to say, and nothing missed
                    continue
                self._heard(raw, str(own))
        finally:
            receiver.close()
            if self._own == own and _is_socket(own, None):
                _remove(own)
            self._own = None

    async def close(self) -> None:
        await super().close()
        self._sender.close()


def _is_socket(path: Path, inode: int | None) -> bool:
    try:
        found = path.stat()
    except FileNotFoundError:
        return False
    return stat.S_ISSOCK(found.st_mode) and (inode is None or found.st_ino == inode)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
