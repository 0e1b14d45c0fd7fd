"""Buffer-pool liveness: a one-buffer pool with slow replies still serves everyone."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

from guest import ZERO_COPY
from guest import mount as M
from guest.checks.context import Ctx, Skip, expect
from guest.checks.server_proc import ServerProc

DELAY_MS = 150
CLIENTS = 3


def pool_starvation(ctx: Ctx) -> None:
    """pool_bufs=1, 4 entries, delayed replies, 3 concurrent stats on one CPU.

    The kernel must queue requests that find no free buffer (no error, no
    ENOBUFS) and hand them out as the buffer returns: all stats succeed, the
    server never sees two buffers in use on that queue, and the stats take at
    least CLIENTS replies' worth of delay because they were serialized. Path
    proof: fusectl's `waiting` reached 2 meanwhile (a request was in the kernel
    while another held the buffer), else `not exercised`.
    """
    if ctx.transport in ("legacy", "iovec"):
        raise Skip("no buffer pool")
    work = tempfile.mkdtemp(prefix="fh-starve-", dir="/tmp")
    mnt, backing = os.path.join(work, "mnt"), os.path.join(work, "backing")
    os.mkdir(mnt)
    os.mkdir(backing)
    extra = ["--pool-bufs", "1", "--queue-depth", "4", "--delay-ms", str(DELAY_MS)]
    if ctx.transport in ZERO_COPY:
        extra += ["--backend", "passthrough", "--backing", backing]
    srv = ServerProc(work, mnt, ctx.transport, extra)
    try:
        srv.start()
        target = os.path.join(mnt, "f")
        with open(target, "w") as f:
            f.write("x")
        cpu = min(os.sched_getaffinity(0))
        errors: list[str] = []

        def client(i: int) -> None:
            try:
                os.stat(os.path.join(mnt, f"missing-{i}") if i % 2 else target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"client {i}: {exc}")

        def run_pinned(i: int) -> None:
            os.sched_setaffinity(threading.get_native_id(), {cpu})
            client(i)

        threads = [threading.Thread(target=run_pinned, args=(i,), daemon=True)
                   for i in range(CLIENTS)]
        minor, most = M.minor_of(mnt), [0]

        def sample() -> None:  # path proof: fusectl `waiting`, the kernel's requests in flight
            while any(th.is_alive() for th in threads):
                most[0] = max(most[0], M.waiting(minor) or 0)
                time.sleep(0.005)

        t0 = time.monotonic()
        for th in threads:
            th.start()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for th in threads:
            th.join(60)
        took = time.monotonic() - t0
        sampler.join(5)
        expect(not any(th.is_alive() for th in threads), "a starved client never returned")
        expect(not errors, f"client errors: {errors}")
        rc = srv.stop()
        c = srv.counters()
        expect(rc == 0 and c is not None, f"server exit {rc}")
        hw = c["pool"]["per_queue_high_water"].get(str(cpu), 0)
        ctx.diag(f"{CLIENTS} concurrent stats on cpu {cpu} took {took:.2f}s; "
                 f"pool high water {hw}; per_queue {c['per_queue']}")
        expect(most[0] >= 2, f"not exercised: fusectl waiting never above {most[0]}: no request waited "
               "for the buffer while another held it")
        expect(hw == 1, f"queue {cpu} high water {hw}, want 1 (pool has one buffer)")
        expect(took >= CLIENTS * DELAY_MS / 1000 * 0.9,
               f"{CLIENTS} stats took {took:.2f}s: not serialized by the 1-buffer pool")
        expect(c["errors"]["cqe_total"] == 0, f"CQE errors {c['errors']['cqe']}")
        if ctx.transport == "bufring":  # 10/14: queued for the buffer, handed on at the commit
            b = c["bufring"]
            ctx.diag(f"bufring counters {b}")
            expect(b["waited"] >= 1, f"no request waited for the one buffer: {b}")
            expect(b["shared"] == 0, f"one buffer id held by two entries at once: {b}")
    finally:
        srv.stop()
        M.teardown(mnt)
        if not M.is_mounted(mnt):
            shutil.rmtree(work, ignore_errors=True)
