"""The kernel's hung-task detector on a FUSE mount (the harness's HUNG_TASK finding, for real).

The server holds writer 1's WRITE; writer 2 on the same file then sleeps uninterruptibly on
the inode lock (D state, what the detector watches; a task waiting for a FUSE reply sleeps
interruptibly or killably and is not reported). With hung_task_timeout_secs lowered the
detector must name writer 2 in the kernel log; releasing the WRITE lets both writers finish.
The sysctls are restored whatever happens, so later tests keep the configured timeout.
"""

from __future__ import annotations

import contextlib
import os
import time

from guest.edge.clients import Client, read_file
from guest.edge.commit import kmsg_records
from guest.edge.core import Ctx
from guest.edge.served import Served

SYSCTL = "/proc/sys/kernel/"
TIMEOUT = 3  # hung_task_timeout_secs while the scenario runs
DATA = {b"f": b"." * 4096}


def _write(path: str, byte: bytes) -> int:
    with open(path, "r+b") as f:
        return f.write(byte * 4096)


class Sysctls:
    """Set kernel sysctls, remember the old values, restore them (idempotent)."""

    def __init__(self, values: dict[str, str], base: str = SYSCTL) -> None:
        self.old: dict[str, str] = {}
        self.base = base
        for name, value in values.items():
            with open(base + name) as f:
                self.old[name] = f.read().strip()
            with open(base + name, "w") as f:
                f.write(value)

    def restore(self) -> None:
        for name, value in self.old.items():
            with contextlib.suppress(OSError), open(self.base + name, "w") as f:
                f.write(value)
        self.old = {}


class Kmsg:
    """New kernel log records from now on (/dev/kmsg, non-blocking), read as they come."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def lines(self) -> list[str]:
        return kmsg_records(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def hung_writer(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A writer stuck on the inode lock behind a held WRITE is reported by khungtaskd."""
    if not os.path.exists(SYSCTL + "hung_task_timeout_secs"):
        for case in ctx.cases:
            ctx.result(case, False, "no /proc/sys/kernel/hung_task_timeout_secs: CONFIG_DETECT_HUNG_TASK is off")
        return
    sysctls = Sysctls({"hung_task_timeout_secs": str(TIMEOUT), "hung_task_warnings": "-1"})
    ctx.closers.append(sysctls.restore)
    kmsg = Kmsg()
    ctx.closers.append(kmsg.close)
    try:
        srv = Served(ctx, "hung", transport=args.transport, files=DATA)
        eng = srv.engine
        eng.auto = True
        eng.hold = lambda i: i["op"] == "WRITE"
        w1 = Client(ctx, "writer1", lambda: _write(srv.path("f"), b"1"), cpu=0)
        if not srv.wait_held(1, 20.0):
            raise RuntimeError(f"writer 1's WRITE never reached the ring: {eng.log[-5:]}")
        w2 = Client(ctx, "writer2", lambda: _write(srv.path("f"), b"2"), cpu=1 if os.cpu_count() > 1 else 0)
        blocked = srv.pump(10.0, lambda: w2.state() == "D")
        ctx.result("second_writer_in_d_state", blocked and len(eng.held) == 1,
                   f"writer 2 state {w2.state()}, {len(eng.held)} request(s) held")
        seen: list[str] = []
        tag = f":{w2.pid} blocked for more than"

        def reported() -> bool:
            seen.extend(kmsg.lines())
            return any(tag in line for line in seen)

        t0 = time.monotonic()
        found = srv.pump(6 * TIMEOUT + 10, reported)
        hits = [ln.split("\n", 1)[0] for ln in seen if "blocked for more than" in ln]
        ctx.result("hung_task_reported", found,
                   f"after {time.monotonic() - t0:.1f}s: {hits[:2] or 'no hung-task report'}")
    finally:
        sysctls.restore()  # before anything else can block for long
    eng.hold = None  # writer 2's WRITE, once it gets the lock, is answered at once
    for e in list(eng.held):
        eng.answer(e)
    done = srv.pump(20.0, lambda: w1.done() and w2.done())
    r1, r2 = w1.poll(), w2.poll()
    ctx.result("writers_complete", done and bool(r1 and r1.get("ok")) and bool(r2 and r2.get("ok")),
               f"writer 1 {r1}, writer 2 {r2}")
    reader = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)  # this thread pumps the ring
    srv.pump(20.0, reader.done)
    out = reader.poll() or {}
    data = str(out.get("value", ""))
    ctx.result("data_intact", data == "2" * 4096,
               f"file holds {data[:8]!r}... ({len(data)} bytes) {out.get('error', '')}".strip())
