"""What every check case gets: paths, options, diagnostics, bounded subprocesses, and the
server's request counters mid-run (Ctx.requests)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Skip(Exception):
    """Raised by a case that cannot run here (the reason is the message)."""


def _no_snapshot() -> dict | None:
    return None


@dataclass
class Ctx:
    """Per-run context handed to each case.

    max_payload: the negotiated max_payload_sz in bytes (max(8192, max_write, max_pages * page
    size), guest.fuse.proto.max_payload_size; 128 KiB with serve's defaults): the largest
    payload one request carries on every transport, so the sizes the data cases call
    "several chunks" are multiples of it. scale: `check --scale`, a factor (>= 1) on the bulk of
    the workloads (chunk counts, entry counts, fio's file, fsx's operations) beyond what their
    paths need. snapshot: the server's counters document now (ServerProc.snapshot), or None.
    """

    mnt: str
    scratch: str  # local (non-FUSE) directory for reference files
    transport: str
    backend: str
    seed: int
    fsx_ops: int
    diag: Callable[[str], None]
    facts: dict = field(default_factory=dict)  # cases leave notes for counter checks
    max_payload: int = 131072
    scale: int = 1
    snapshot: Callable[[], dict | None] = _no_snapshot

    def path(self, *parts: str) -> str:
        """A path inside the mount."""
        return os.path.join(self.mnt, *parts)

    def counters(self, what: str) -> dict:
        """The server's counters document now (guest/counters.py). AssertionError "not
        exercised: ..." when the server wrote no snapshot (a case that cannot count cannot prove
        its path); what: what the case wanted to count, for that message."""
        c = self.snapshot()
        if c is None:
            raise AssertionError(f"not exercised: no counters snapshot from the server to count {what}")
        return c

    def requests(self, *ops: str) -> int:
        """How many requests of these opcodes (names as in counters per_opcode, e.g. "READDIR")
        the server has received so far (see counters())."""
        per_opcode = self.counters("/".join(ops))["per_opcode"]
        return sum(per_opcode.get(op, 0) for op in ops)

    def run(self, cmd: list[str], timeout: float = 60.0, **kw: object) -> str:
        """Run a program (see run_bytes); return its stdout as text."""
        return self.run_bytes(cmd, timeout, **kw).decode(errors="replace")

    def run_bytes(self, cmd: list[str], timeout: float = 60.0, **kw: object) -> bytes:
        """Run a program in the background, poll, kill on timeout; return stdout.

        Raises AssertionError on non-zero exit or timeout (never waits in the
        foreground on a possibly wedged mount).
        """
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                **kw)  # type: ignore[call-overload]
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{cmd[0]} timed out after {timeout}s") from None
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: "
                                 f"{err.decode(errors='replace').strip()[:300]}")
        return out


def sha256_file(path: str, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file read with plain read()."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def pattern(size: int, seed: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (fast to generate)."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 128  # 4 KiB
    reps = size // len(block) + 1
    data = bytearray(block * reps)[:size]
    for off in range(0, size, 4096):  # make every page distinct
        data[off:off + 8] = ((off ^ seed) & (2**64 - 1)).to_bytes(8, "little")
    return bytes(data[:size])


def expect(cond: bool, msg: str) -> None:
    """Soft assert with a message."""
    if not cond:
        raise AssertionError(msg)


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by fn()."""
    t = time.monotonic()
    fn()
    return time.monotonic() - t
