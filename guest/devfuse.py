"""The /dev/fuse reader: serves requests read from the device (all transports).

FORGET, INTERRUPT and anything queued before the ring is ready arrive here;
for the legacy transport everything does. Blocks the process signals in its
own thread so they reach the main thread.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

from guest.counters import Counters
from guest.fuse import proto as P
from guest.server import Server

BLOCKED = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT}


def block_signals() -> None:
    """Block the signals the main thread handles, in the calling thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)


class DevFuseReader(threading.Thread):
    """Reads requests from /dev/fuse and writes replies, until ENODEV."""

    def __init__(self, fd: int, server: Server, counters: Counters, bufsize: int,
                 delay: float = 0.0, on_exit: Callable[[], None] | None = None) -> None:
        super().__init__(name="devfuse", daemon=True)
        self.fd = fd
        self.server = server
        self.counters = counters
        self.bufsize = bufsize
        self.delay = delay
        self.on_exit = on_exit
        self.exit_errno: int | None = None

    def run(self) -> None:
        block_signals()
        try:
            self._loop()
        finally:
            if self.on_exit:
                self.on_exit()

    def _loop(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, self.bufsize)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                    continue
                self.exit_errno = exc.errno
                return
            try:
                self.handle(buf)
            except Exception:  # noqa: BLE001 - keep serving; the counters show it
                traceback.print_exc(file=sys.stderr)
                self.counters.bump("exception", "")

    def handle(self, buf: bytes) -> None:
        """Serve one request buffer read from the device."""
        try:
            h, arg0, rest = P.split_devfuse(buf)
        except ValueError:
            self.counters.bump("malformed", "")
            return
        self.counters.request("devfuse", h.opcode, None, arg0)
        reply = self.server.dispatch(h, arg0, rest)
        if reply is None:
            return
        if self.delay:
            time.sleep(self.delay)
        self.send(h, *reply)

    def send(self, h: P.InHeader, error: int, data: bytes) -> None:
        """Write the reply to request h (a subclass may write another one)."""
        try:
            os.write(self.fd, P.pack_devfuse_reply(h.unique, error, data))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                self.counters.cqe_error(-exc.errno)
