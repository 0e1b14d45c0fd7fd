"""INIT negotiated FUSE_OVER_IO_URING, but the ring never becomes ready.

Until every queue has an entry, new requests wait in request allocation (a killable wait,
fuse_block_alloc; fuse-uring-abi.md 1.2), even with a server reading /dev/fuse. The verdicts:
such a client is really waiting (nothing reached /dev/fuse for it), SIGKILL ends it, an abort
releases the others with ENOTCONN, and the mount unmounts. With `kernel.io_uring_disabled=2`
io_uring_setup fails with EPERM, and a server that then leaves FUSE_OVER_IO_URING out of its
INIT reply is served over /dev/fuse.
"""

from __future__ import annotations

import errno

from guest.counters import Counters
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.conn import Conn
from guest.edge.core import Ctx, _reap, kernel_stack
from guest.edge.hung import Sysctls
from guest.edge.kmbuf import umount_lazy
from guest.edge.served import Served, devfuse_server
from guest.uring.ring import Ring

DATA = {b"f": b"never ready\n" * 300, b"g": b"never ready\n" * 300}
WANT = DATA[b"f"].decode("latin-1")
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


def _served_over_devfuse(ctx: Ctx, case: str, path: str, counters: Counters, why: str) -> None:
    c = Client(ctx, "reader", lambda: read_file(path), cpu=0)
    wait_all([c], min(20.0, ctx.left()))
    out = c.poll(0.0)
    dev = counters.snapshot()["paths"].get("devfuse", 0)
    ctx.result(case, bool(out and out.get("ok") and out["value"] == WANT and dev > 0),
               f"{why}: client {'read the file' if out and out.get('ok') else out or 'blocked'}; "
               f"requests over /dev/fuse: {dev}")


def never_ready(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A server that reads /dev/fuse and never registers; then io_uring switched off."""
    srv = Served(ctx, "nr1", transport="iovec", files=DATA, start=False)  # every kernel has it
    # two names: a second lookup of the same name waits for the first in d_alloc_parallel,
    # uninterruptibly (VFS, d_wait_lookup), and SIGKILL could not end it before the abort
    killed = Client(ctx, "killed", lambda: read_file(srv.path("f")), cpu=0)
    waiter = Client(ctx, "waiter", lambda: read_file(srv.path("g")), cpu=1)
    blocked = not wait_all([killed, waiter], 3.0)
    dev = srv.counters.snapshot()["paths"].get("devfuse", 0)
    state, where = killed.state(), kernel_stack(killed.pid)
    ctx.result("clients_wait_for_ready", blocked and dev == 0,
               f"after 3 s: killed {killed.poll(0.0) or 'waiting, state ' + state}, waiter "
               f"{waiter.poll(0.0) or 'waiting'}; requests answered over /dev/fuse: {dev}")
    killed.kill()
    gone = _reap(killed.pid, 5.0) is not None
    ctx.result("client_killable", gone, f"gone within 5 s of SIGKILL: {gone} (state was {state}, {where}"
               + ("" if gone else f"; after the SIGKILL: state {killed.state()}, {kernel_stack(killed.pid)}") + ")")
    aborted = srv.conn.abort()
    wait_all([waiter], min(10.0, ctx.left()))
    out = waiter.poll(0.0)
    ctx.result("abort_releases_client", aborted and bool(out) and out.get("errno") in DEAD,
               f"fusectl abort {aborted}; waiter: {out or 'still blocked, state ' + waiter.state()}")
    umount_lazy(ctx, srv)

    sysctls = Sysctls({"io_uring_disabled": "2"})
    ctx.closers.append(sysctls.restore)
    try:
        Ring(4).close()
        setup = "io_uring_setup succeeded"
    except OSError as exc:
        setup = errno.errorcode.get(exc.errno, str(exc.errno))
    ctx.result("io_uring_setup_refused", setup == "EPERM",
               f"io_uring_setup with kernel.io_uring_disabled=2: {setup} (EPERM expected)")
    conn = Conn(ctx, "nr3")
    init = conn.setup(want_uring=False)
    counters, _ = devfuse_server(conn, DATA)
    ctx.diag(f"INIT with io_uring disabled: the kernel offered FUSE_OVER_IO_URING: {init.offered_uring}")
    _served_over_devfuse(ctx, "devfuse_serves_without_io_uring", f"{conn.mnt}/f", counters,
                         "io_uring disabled, INIT without FUSE_OVER_IO_URING")
    sysctls.restore()
