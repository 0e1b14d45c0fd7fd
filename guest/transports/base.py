"""The Transport contract, its options, the setup error, and the name registry."""

from __future__ import annotations

import errno
import importlib
import os
from dataclasses import dataclass
from typing import Protocol

from guest.counters import Counters
from guest.negotiate import Init
from guest.server import Server

_MODULES = {"legacy": ("legacy", "LegacyTransport"),
            "iovec": ("iovec", "IovecTransport"),
            "bufpool": ("bufpool", "BufpoolTransport"),
            "bufpool-registered": ("registered", "RegisteredTransport"),
            "zero-copy": ("zerocopy", "ZeroCopyTransport"),
            "bufring": ("bufring", "BufringTransport"),
            "kmbuf": ("kmbuf", "KmbufTransport"),
            "kmbuf-zero-copy": ("kmbuf", "KmbufZeroCopyTransport")}


@dataclass(frozen=True)
class Options:
    """Sizing knobs shared by the ring transports."""

    queue_depth: int = 4
    pool_bufs: int = 4
    delay: float = 0.0
    buf_size: int = 0  # kmbuf/bufring buffer bytes; 0 = max_payload_sz (kmbuf: rounded up to a page)


class SetupError(Exception):
    """A setup step failed; `step` names it, `errno` is the kernel's answer."""

    def __init__(self, step: str, code: int, detail: str = "") -> None:
        self.step = step
        self.errno = abs(code)
        name = errno.errorcode.get(self.errno, str(self.errno))
        super().__init__(f"{step} failed: {name} ({os.strerror(self.errno)}) {detail}".strip())

    def report(self) -> dict:
        """JSON view for the counters file."""
        return {"step": self.step, "errno": errno.errorcode.get(self.errno, self.errno),
                "message": str(self)}


class Transport(Protocol):
    """What the daemon drives. Ring transports set uses_uring."""

    name: str
    uses_uring: bool
    needs_bufpool: bool  # generation C only
    zero_copy: bool

    def __init__(self, devfd: int, server: Server, counters: Counters, init: Init,
                 opts: Options) -> None: ...

    def start(self) -> None:
        """Set up (raise SetupError); on return the transport is serving."""

    def run(self) -> None:
        """Serve until the connection goes away or a stop completes."""

    def request_stop(self) -> None:
        """Ask run() to finish soon (async-signal safe)."""

    def device_gone(self) -> None:
        """The /dev/fuse reader saw ENODEV (called from that thread)."""

    def poison(self) -> None:
        """Disable io_uring on a not-yet-ready connection (fallback to /dev/fuse)."""


def supported() -> tuple[str, ...]:
    """Transport names, in order of increasing features."""
    return tuple(_MODULES)


def get(name: str) -> type:
    """The Transport class for a name (ValueError if unknown)."""
    try:
        mod, cls = _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r}; choose from {supported()}") from None
    return getattr(importlib.import_module(f"guest.transports.{mod}"), cls)


def nr_possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Number of possible CPUs (= FUSE io_uring queues), from e.g. "0-3"."""
    with open(path) as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count
