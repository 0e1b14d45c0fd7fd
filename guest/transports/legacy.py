"""legacy: /dev/fuse only; INIT reply carries no FUSE_OVER_IO_URING."""

from __future__ import annotations

import threading

from guest.counters import Counters
from guest.negotiate import Init
from guest.server import Server
from guest.transports.base import Options


class LegacyTransport:
    """Everything is served by the daemon's /dev/fuse reader; this just waits."""

    name = "legacy"
    uses_uring = False
    needs_bufpool = False
    zero_copy = False

    def __init__(self, devfd: int, server: Server, counters: Counters, init: Init,
                 opts: Options) -> None:
        self.counters = counters
        self._done = threading.Event()
        self._stop = False

    def start(self) -> None:
        return None

    def run(self) -> None:
        while not self._done.is_set() and not self._stop:
            self._done.wait(0.2)

    def request_stop(self) -> None:
        self._stop = True

    def device_gone(self) -> None:
        self._done.set()

    def poison(self) -> None:
        return None
