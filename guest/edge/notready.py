"""INIT negotiated FUSE_OVER_IO_URING, but the ring never becomes ready.

Three servers: one that reads /dev/fuse but never registers an entry (requests must keep
flowing over /dev/fuse), one that does nothing after INIT (its clients wait: they must stay
killable, an abort must release them and the mount must unmount), and one on a kernel whose
io_uring is switched off (`kernel.io_uring_disabled=2`: io_uring_setup fails, /dev/fuse
serves).
"""

from __future__ import annotations

import errno

from guest import mount as M
from guest.counters import Counters
from guest.devfuse import DevFuseReader
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.conn import Conn
from guest.edge.core import Ctx, _reap
from guest.edge.hung import Sysctls
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.fuse.fs import MemoryFs
from guest.server import Server
from guest.uring.ring import Ring

DATA = {b"f": b"never ready\n" * 300}
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


def _memory_server(conn: Conn) -> tuple[Counters, DevFuseReader]:
    fs = MemoryFs()
    for name, data in DATA.items():
        _, ino = fs.create(P.ROOT_ID, name, 0o644, 0, 0, 0)
        fs.write(ino, ino, 0, data)
    counters = Counters("legacy")
    reader = DevFuseReader(conn.fd, Server(fs, counters), counters, 1 << 20)
    reader.start()
    return counters, reader


def never_ready(ctx: Ctx, args) -> None:  # noqa: ANN001
    """The three servers above, one after the other."""
    srv = Served(ctx, "nr1", transport="iovec", files=DATA, start=False)  # every kernel has it
    _served_over_devfuse(ctx, "served_over_devfuse", srv.path("f"), srv.counters,
                         "no REGISTER ever, /dev/fuse read")

    conn = Conn(ctx, "nr2")
    conn.setup(want_uring=True)
    killed = Client(ctx, "killed", lambda: read_file(f"{conn.mnt}/f"), cpu=0)
    waiter = Client(ctx, "waiter", lambda: read_file(f"{conn.mnt}/f"), cpu=1)
    blocked = not wait_all([killed], 2.0)
    state = killed.state()
    killed.kill()
    gone = _reap(killed.pid, 5.0) is not None
    ctx.result("client_killable", blocked and gone,
               f"a client of a server that does nothing after INIT: blocked {blocked} "
               f"(state {state}), gone within 5 s of SIGKILL: {gone}")
    aborted = conn.abort()
    wait_all([waiter], min(10.0, ctx.left()))
    out = waiter.poll(0.0)
    ctx.result("abort_releases_client", aborted and bool(out) and out.get("errno") in DEAD,
               f"fusectl abort {aborted}; waiter: {out or 'still blocked, state ' + waiter.state()}")
    try:
        M.umount(conn.mnt, M.MNT_DETACH)
        um = "ok"
    except OSError as exc:
        um = exc.strerror
    ctx.result("umount_after_abort", um == "ok", f"umount -l: {um}")

    sysctls = Sysctls({"io_uring_disabled": "2"})
    ctx.closers.append(sysctls.restore)
    try:
        Ring(4).close()
        setup = "io_uring_setup succeeded"
    except OSError as exc:
        setup = errno.errorcode.get(exc.errno, str(exc.errno))
    ctx.result("io_uring_setup_refused", setup == "EPERM",
               f"io_uring_setup with kernel.io_uring_disabled=2: {setup} (EPERM expected)")
    conn3 = Conn(ctx, "nr3")
    conn3.setup(want_uring=True)
    counters, _ = _memory_server(conn3)
    _served_over_devfuse(ctx, "devfuse_serves_without_io_uring", f"{conn3.mnt}/f", counters,
                         "io_uring disabled, /dev/fuse read")
    sysctls.restore()
