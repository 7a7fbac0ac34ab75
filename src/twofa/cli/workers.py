"""The supervisor of `twofa serve --workers N`: N processes, each accepting on a listening
socket of its own, all bound to the one port with SO_REUSEPORT so the kernel spreads new
connections evenly among them.

uvicorn's own supervisor hands one shared socket to every worker, and whichever process wakes
first accepts everything waiting: under load one worker often holds most keep-alive
connections (all 64 of a benchmark's, in one measured round) while the other idles, which
halves the throughput and multiplies the tail latency. The parent binds every socket before
starting a worker and keeps them open, so a worker that dies and is replaced loses no
connection queued on its socket, and a port already taken fails before anything starts.
The supervisor says when a worker is gone for good (`on_worker_exit`), so its per-process
state elsewhere (its live metrics gauges) can be dropped.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger


def reuse_port_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """`count` listening sockets on one address; port 0 takes a free port for all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            listener = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((host, port))
            port = listener.getsockname()[1]  # the same port for the rest when 0 was asked
            listener.listen(backlog)
            listener.set_inheritable(True)
    except OSError:
        for listener in sockets:
            listener.close()
        raise
    return sockets


class ReusePortSupervisor(Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts) with worker `i` always given
    socket `i` only. The three methods that start workers are uvicorn's, with that change."""

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        on_worker_exit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(config, sockets)
        self.processes_num = len(sockets)
        self._on_worker_exit = on_worker_exit

    def _retired(self, process: Process) -> None:
        """A worker that was joined (exited) and will not serve again."""
        if self._on_worker_exit is not None and process.pid is not None:
            self._on_worker_exit(process.pid)

    def _worker(self, slot: int) -> Process:
        return Process(self.config, [self.sockets[slot]])

    def init_processes(self) -> None:
        for slot in range(self.processes_num):
            process = self._worker(slot)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        for slot, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._worker(slot)
            new_process.start()
            timeout = self.config.timeout_worker_healthcheck
            if not new_process.wait_until_ready(timeout, self.should_exit):
                new_process.kill()
                new_process.join()
                self._retired(new_process)
                if not self.should_exit.is_set():
                    logger.error(
                        "New worker [%s] was not ready in time; keeping worker [%s].",
                        new_process.pid,
                        old_process.pid,
                    )
                return
            old_process.terminate()
            old_process.join()
            self._retired(old_process)
            self.processes[slot] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: kill it
            process.join()
            self._retired(process)
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving (app, settings, socket): a restart fails the same way.
                logger.error("Worker [%s] failed to start; stopping.", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("Worker [%s] died; starting another.", process.pid)
            replacement = self._worker(slot)
            replacement.start()
            self.processes[slot] = replacement


def run_workers(
    config: uvicorn.Config, workers: int, on_worker_exit: Callable[[int], None] | None = None
) -> None:
    """Serves `config` (an import string with factory=True: each worker builds its app) from
    `workers` processes until a signal stops the parent; `on_worker_exit(pid)` for each
    worker that exits while the others serve on."""
    sockets = reuse_port_sockets(config.host, config.port, workers, config.backlog)
    try:
        ReusePortSupervisor(config, sockets, on_worker_exit).run()
    finally:
        for listener in sockets:
            listener.close()
