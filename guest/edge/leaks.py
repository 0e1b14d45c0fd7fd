"""Leak checks around one scenario: what it took from the kernel must come back after cleanup.

Three counters, read before the scenario and after its cleanup (every connection aborted and
lazily unmounted, clients killed, rings closed):

- FUSE connections: /sys/fs/fuse/connections/N made during the scenario and still there
  (a connection outlives its last mount and /dev/fuse fd only while a reference leaks);
- locked memory of the scenario process (the server): `VmLck` of /proc/self/status, kB
  (registered buffers and kernel-managed rings are charged there);
- pinned user pages: /proc/vmstat `nr_foll_pin_acquired - nr_foll_pin_released`
  (pin_user_pages(): io_uring fixed buffers, zero-copy slots, O_DIRECT, and 9p reads of the
  guest's own files), guest-wide, so only growth counts (an earlier test's teardown may still
  be releasing pins). The two counters are read one after the other while 9p I/O is in
  flight, so a single reading can be a few pages off either way (seen: -5 with nothing
  pinned): a baseline below zero counts as zero, and `check` passes at the first reading that
  is back.

Teardown is partly asynchronous (fuse_abort_conn, io_uring's ring exit work), so `check`
polls until everything is back or its timeout passes, then names what is still missing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from guest import time_scale

CONNECTIONS = "/sys/fs/fuse/connections"


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment: connection names, VmLck (kB), pinned pages (count)."""

    connections: frozenset[str]
    vmlck_kb: int | None
    pinned: int | None


def _connections() -> frozenset[str]:
    try:
        return frozenset(n for n in os.listdir(CONNECTIONS) if n.isdigit())
    except OSError:
        return frozenset()


def _vmlck_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmLck:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pinned() -> int | None:
    vals: dict[str, int] = {}
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name in ("nr_foll_pin_acquired", "nr_foll_pin_released"):
                    vals[name] = int(value)
    except (OSError, ValueError):
        return None
    if len(vals) != 2:
        return None
    return vals["nr_foll_pin_acquired"] - vals["nr_foll_pin_released"]


def snapshot() -> Snapshot:
    """The counters now."""
    return Snapshot(_connections(), _vmlck_kb(), _pinned())


def leaked(before: Snapshot, now: Snapshot) -> list[str]:
    """What `now` still holds beyond `before`, one phrase per counter ([] when nothing)."""
    out = []
    extra = sorted(now.connections - before.connections, key=int)
    if extra:
        out.append(f"FUSE connection(s) {', '.join(extra)} still in {CONNECTIONS}")
    if before.vmlck_kb is not None and now.vmlck_kb is not None and now.vmlck_kb > before.vmlck_kb:
        out.append(f"VmLck {now.vmlck_kb} kB, was {before.vmlck_kb} kB")
    if before.pinned is not None and now.pinned is not None and now.pinned > max(before.pinned, 0):
        out.append(f"pinned pages (nr_foll_pin_acquired - released) {now.pinned}, was {before.pinned}")
    return out


def check(before: Snapshot, timeout: float | None = None) -> list[str]:
    """Poll until nothing leaked or timeout s passed (default 5 s x the time scale); what is
    still leaked then."""
    end = time.monotonic() + (5.0 * time_scale() if timeout is None else timeout)
    while True:
        missing = leaked(before, snapshot())
        if not missing or time.monotonic() >= end:
            return missing
        time.sleep(0.1)
