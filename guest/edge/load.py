"""Teardown under load, repeated (issue class "hard teardown", T8).

Round after round, clients on every CPU (so on every queue) write, drop the page cache and
read back in a loop while the server answers; then the connection is torn down in one of four
ways, in turn: fusectl abort; umount -f (MNT_FORCE: the connection is aborted, the umount
itself may fail EBUSY while files are open); umount -l (MNT_DETACH: open files keep the
connection, which must go on serving, then fusectl abort); SIGKILL of the server process.
Every client must return within the bound with ENOTCONN/ECONNABORTED (or EIO for a write
that was in flight), never hang. Then, at queue depth 1, clients are SIGKILLed one after the
other while the server commits: the entry must come back each time, so a fresh read works
at the end and fusectl's `waiting` returns to 0.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time

from guest import mount as M
from guest.edge import LOAD_METHODS, time_scale
from guest.edge.clients import Client, fork_server, read_file
from guest.edge.core import Ctx
from guest.edge.served import Served

BLOCK = bytes(range(256)) * 16  # 4 KiB
DEAD = (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENODEV)
BOUND = 15.0
LOADED = 8  # requests answered before a round's teardown


def _io_loop(path: str) -> int:
    """Client op: write, drop the cache, read back, until the connection fails (raises)."""
    fd = os.open(path, os.O_RDWR)
    n = 0
    try:
        while True:
            off = (n % 16) * len(BLOCK)
            os.pwrite(fd, BLOCK, off)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if os.pread(fd, len(BLOCK), off) != BLOCK:
                return -n
            n += 1
    finally:
        os.close(fd)


def _server_child(ctx: Ctx, args, tag: str, files: dict[bytes, bytes]) -> tuple[int, str]:  # noqa: ANN001
    """A forked server process (Served, answering everything) for a mount at ctx.mountpoint(tag):
    (pid, mount point) once it is ready."""
    def serve(w: int) -> None:
        srv = Served(ctx, tag, transport=args.transport, queue_depth=2, files=files)
        srv.engine.auto = True
        os.write(w, b"R")
        srv.pump(120.0, lambda: False)

    pid, r, mnt = fork_server(ctx, tag, serve)
    ready = select.select([r], [], [], min(30.0, ctx.left()))[0] and os.read(r, 1) == b"R"
    os.close(r)
    if not ready:
        raise RuntimeError(f"the server child for {mnt} never became ready")
    return pid, mnt


def _round(ctx: Ctx, args, i: int, method: str, canceled: list[str]) -> str | None:  # noqa: ANN001
    """One round; None when it was clean, else what went wrong. A client that got ECANCELED
    goes to `canceled` instead (a case of its own: an errno read(2) and write(2) never give)."""
    files = {f"f{c}".encode(): b"" for c in range(4)}
    if method == "server_sigkill":
        srv, (pid, mnt) = None, _server_child(ctx, args, f"load{i}", files)
    else:
        srv = Served(ctx, f"load{i}", transport=args.transport, queue_depth=2, files=files)
        srv.engine.auto = True
        pid, mnt = 0, srv.mnt
    minor = M.minor_of(mnt)
    clients = [Client(ctx, f"r{i}c{c}", lambda c=c: _io_loop(f"{mnt}/f{c}"), cpu=c % (os.cpu_count() or 1))
               for c in range(4)]
    # load first: 0.6 s (every client has opened its file: an open after umount -l would miss
    # the mount), then on until 8 requests are answered (a debug kernel is slow)
    _serve(srv, 0.6 * time_scale())
    if srv is not None:
        srv.pump(min(5.0 * time_scale(), ctx.left()), lambda: len(srv.engine.answered) >= LOADED)
    busy = len(srv.engine.answered) if srv else -1
    try:
        if method == "abort":
            torn = "ok" if M.abort(minor=minor) else "no fusectl entry"
        elif method == "umount_force":
            M.umount(mnt, M.MNT_FORCE)  # EBUSY while files are open, after aborting (umount_begin)
            torn = "ok"
        elif method == "umount_lazy":  # open files keep the connection: still served, then abort
            M.umount(mnt, M.MNT_DETACH)
            _serve(srv, 0.4)
            more = len(srv.engine.answered) - busy
            torn = "ok" if more > 0 and M.abort(minor=minor) else f"{more} requests served after the detach"
        else:
            os.kill(pid, signal.SIGKILL)
            torn = "ok"
    except OSError as exc:
        torn = "ok" if method == "umount_force" and exc.errno == errno.EBUSY else exc.strerror
    end = time.monotonic() + min(BOUND, ctx.left())
    while time.monotonic() < end and not all(c.done() for c in clients):
        _serve(srv, 0.05)
    problems = [] if torn == "ok" else [f"{method}: {torn}"]
    if srv is not None and busy < LOADED:
        problems.append(f"only {busy} requests answered before the teardown (no load)")
    for c in clients:
        o = c.poll(0.0)
        if o is None:
            problems.append(f"{c.name} still blocked after {BOUND:.0f} s ({c.state()})")
        elif o.get("ok"):
            problems.append(f"{c.name} read back wrong bytes after {-o['value']} rounds")
        elif o.get("errno") == errno.ECANCELED:
            canceled.append(f"round {i} ({method}): {c.name}")
        elif o.get("errno") not in DEAD:
            problems.append(f"{c.name}: {errno.errorcode.get(o.get('errno'), o.get('error'))}")
    M.abort(minor=minor)
    M.teardown(mnt)
    if srv is not None:
        srv.close_rings()
    return f"round {i} ({method}, {busy} answered): " + "; ".join(problems) if problems else None


def _serve(srv: Served | None, seconds: float) -> None:
    if srv is not None and srv.engine.ring.fd >= 0:
        srv.pump(seconds)
    else:
        time.sleep(seconds)


def teardown_load(ctx: Ctx, args) -> None:  # noqa: ANN001
    """args.iterations rounds (methods in turn), then the SIGKILLed clients at depth 1."""
    bad: dict[str, list[str]] = {m: [] for m in LOAD_METHODS}
    runs: dict[str, int] = dict.fromkeys(LOAD_METHODS, 0)
    canceled: list[str] = []
    t0 = time.monotonic()
    for i in range(max(args.iterations, len(LOAD_METHODS))):
        method = LOAD_METHODS[i % len(LOAD_METHODS)]
        if ctx.left() < BOUND + 10:
            break
        runs[method] += 1
        why = _round(ctx, args, i, method, canceled)
        if why:
            bad[method].append(why)
    ctx.diag(f"{sum(runs.values())} rounds in {time.monotonic() - t0:.0f} s")
    for m in LOAD_METHODS:
        ctx.result(f"{m}_under_load", runs[m] > 0 and not bad[m],
                   f"{runs[m]} rounds; " + ("; ".join(bad[m][:3]) if bad[m] else "every client returned"))
    ctx.result("no_ecanceled_to_clients", not canceled,
               f"clients that got ECANCELED from read/write/open: {canceled[:4]}" if canceled else
               "no client got ECANCELED (teardown errors were ENOTCONN, ECONNABORTED, EIO or ENODEV)")
    _killed_clients(ctx, args)


def _killed_clients(ctx: Ctx, args) -> None:  # noqa: ANN001
    srv = Served(ctx, "load-kill", transport=args.transport, queue_depth=1,
                 files={b"k": b"", b"last": b"last read\n"})
    srv.engine.auto = True
    minor = M.minor_of(srv.mnt)
    for i in range(20):
        c = Client(ctx, f"k{i}", lambda: _io_loop(srv.path("k")), cpu=i % srv.conn.nr_queues)
        srv.pump(min(0.1 + 0.02 * (i % 5), ctx.left()))
        c.kill()
        srv.pump(0.05)
    last = Client(ctx, "last", lambda: read_file(srv.path("last")), cpu=0)
    srv.pump(min(10.0, ctx.left()), last.done)
    out = last.poll(0.0)
    waiting = None
    for _ in range(50):
        srv.pump(0.1)
        waiting = M.waiting(minor)
        if waiting == 0:
            break
    ok = bool(out and out.get("ok") and out["value"] == "last read\n") and waiting == 0
    ctx.result("killed_clients_depth_1", ok,
               f"20 clients SIGKILLed mid-I/O at queue depth 1, {len(srv.engine.answered)} requests "
               f"answered; then a fresh read: {out or 'STILL BLOCKED'}; waiting = {waiting}")
