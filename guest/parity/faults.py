"""The server's faults, applied where a reply is written: one plan for every transport.

`FaultPlan` knows the call in progress (the scenario sets it before it lets the client run
the call) and hands each call's fault to the first reply of its target opcode, once. The
/dev/fuse reader and the ring engine both ask it (guest.parity.serve), so a fault fires on
the same request whatever carries it. `corrupt()` says what the reply becomes.
"""

from __future__ import annotations

import errno
import threading

from guest.parity.gen import HEADER_KINDS, PAD


def corrupt(fault: dict, unique: int, error: int, data: bytes) -> tuple[int, int, bytes]:
    """(out_header.error, out_header.unique, reply payload) of the faulty reply to a request
    whose correct reply is (error, data); unique is the request's unique (commit_id).
    ValueError for an unknown kind."""
    kind = fault["kind"]
    if kind == "errno":
        return -fault["errno"], unique, b""
    if kind == "error_positive":
        return 1, unique, data
    if kind == "error_erestartsys":
        return -512, unique, data
    if kind == "error_int_min":
        return -(1 << 31), unique, data
    if kind == "unique_wrong":  # bit 0 stays clear: the interrupt bit is another scenario (E4)
        return error, unique + (1 << 48), data
    if kind == "reply_long":
        return error, unique, data + PAD
    if kind == "reply_short":
        return error, unique, data[:max(0, len(data) - len(PAD))]
    raise ValueError(f"unknown fault kind {kind!r}")


def header_only(fault: dict) -> bool:
    """The fault changes out_header fields only (the payload stays the correct one)."""
    return fault["kind"] in HEADER_KINDS


class FaultPlan:
    """Faults by call index; `take()` is called from the serving threads."""

    def __init__(self, calls: list[dict]) -> None:
        self.faults = {c["i"]: c["fault"] for c in calls if c.get("fault")}
        self.call: int | None = None
        self.fired: dict[int, list[dict]] = {}
        self._lock = threading.Lock()

    def begin(self, i: int | None) -> None:
        """Call i is about to run (None: between calls, nothing fires)."""
        with self._lock:
            self.call = i

    def take(self, opname: str, error: int) -> tuple[dict, dict] | None:
        """The fault for this reply, once per call: (fault, record); the record is the
        call's account of it and the caller adds what the transport said. None when no
        fault is due; a corruption meeting an error reply is recorded as skipped (it fires
        on success replies only)."""
        with self._lock:
            i = self.call
            f = self.faults.get(i) if i is not None else None
            if f is None or f["req"] != opname or i in self.fired:
                return None
            rec = {"kind": f["kind"], "req": opname}
            self.fired[i] = [rec]
            if f["kind"] != "errno" and error:
                rec["skipped"] = f"error reply -{errno.errorcode.get(-error, -error)}"
                return None
            return f, rec

    def records(self, i: int) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self.fired.get(i, [])]
