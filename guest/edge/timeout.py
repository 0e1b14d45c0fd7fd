"""Request timeouts over io-uring: a server that stops answering, caught by the kernel's scan.

`fs.fuse.default_request_timeout` gives every new connection a request timeout. The kernel
scans a connection every FUSE_TIMEOUT_TIMER_FREQ seconds (15, fs/fuse/req_timeout.c, also
the smallest timeout it applies) and aborts it once the oldest request of any list, ring
entries included (fuse_uring_request_expired), is older than the timeout. So a request the
server holds must end between 15 and 30 s after it was sent, never before and never later.

One mount per ring transport the kernel has, each holding a READ and a WRITE, all at once:
the scenario waits for the scan once, whatever the number of transports. request-timeout-idle
does the same with two mounts per transport whose entries were cancelled before the read.
"""

from __future__ import annotations

import errno
import os
import time

from guest import ZERO_COPY
from guest.edge import IDLE_RINGS, IDLE_STEPS, time_scale
from guest.edge import TIMEOUT_RINGS as RINGS
from guest.edge import timeout_case as _case
from guest.edge import timeout_cases_of as _cases_of
from guest.edge.clients import Client, read_file
from guest.edge.core import Ctx, ename
from guest.edge.hung import Sysctls
from guest.edge.kmbuf import pwrite_file, umount_lazy
from guest.edge.served import Served
from guest.probe import probe

#: FUSE_TIMEOUT_TIMER_FREQ (fs/fuse/req_timeout.c): scan period and smallest timeout, s.
FREQ = 15
DEAD = (errno.ECONNABORTED, errno.ENOTCONN)
DATA = {b"f": b"timeout " * 600, b"w": b"w" * 4096}
SECRET = b"timed-out page " * 250



def request_timeout(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A READ and a WRITE held unanswered on every ring transport of the kernel, under a 15 s
    request timeout: each client must fail with ECONNABORTED/ENOTCONN no sooner than 15 s and
    no later than 30 s (plus a margin) after it started; a COMMIT of the held requests then gets
    -ENOTCONN; on zero-copy the entry's buffer slot no longer reaches the client's pages; the
    mount unmounts."""
    knob = "/proc/sys/fs/fuse/default_request_timeout"
    have = set(probe().get("transports", ()))
    if not os.path.exists(knob):
        for c in ctx.cases:
            ctx.result(c, None, reason=f"no {knob}: kernel without request timeouts")
        return
    for t in RINGS:
        if t not in have:
            for c in _cases_of(t):
                ctx.result(c, None, reason=f"kernel has no {t} transport")
    sysctls = Sysctls({"default_request_timeout": str(FREQ)}, base="/proc/sys/fs/fuse/")
    ctx.closers.append(sysctls.restore)
    served: dict[str, tuple[Served, list[Client]]] = {}
    for i, t in enumerate(r for r in RINGS if r in have):
        srv = Served(ctx, f"rto{i}", transport=t, files=DATA, zero_copy_files=True)
        srv.engine.auto = True
        srv.engine.hold = lambda info: info["op"] in ("READ", "WRITE")
        clients = [Client(ctx, "reader", lambda s=srv: read_file(s.path("f")), cpu=0),
                   Client(ctx, "writer", lambda s=srv: pwrite_file(s.path("w"), SECRET), cpu=0)]
        served[t] = (srv, clients)
    sysctls.restore()  # only connections made above get the timeout
    pump_all(served, 20.0, lambda: all(len(s.engine.held) >= 2 for s, _ in served.values()))
    for t, (srv, _) in served.items():
        ops = sorted(srv.engine.infos[e.gid]["op"] for e in srv.engine.held)
        ctx.result(_case(t, "held"), len(ops) >= 2, f"{t}: held {ops}")
        if t in ZERO_COPY:
            _slot_filled(ctx, t, srv)
    bound = 2 * FREQ + 10 * time_scale()
    pump_all(served, bound + 5,
             lambda: all(c.done() for _, cs in served.values() for c in cs))
    for t, (srv, clients) in served.items():
        _verdicts(ctx, t, srv, clients, bound)


def pump_all(served: dict, timeout: float, until) -> bool:  # noqa: ANN001
    """Reap every mount's rings for up to timeout s; True as soon as until() holds."""
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() >= end:
            return False
        for srv, _ in served.values():
            srv.pump(0.0)
        time.sleep(0.01)
    return True


def _slot_read(ctx: Ctx, srv: Served, tag: int) -> tuple[int | None, bool]:
    """WRITE_FIXED of len(SECRET) bytes from the held WRITE's zero-copy slot into a memfd:
    (CQE res, whether the bytes are the writer's SECRET); (None, False) with no held WRITE."""
    eng = srv.engine
    writes = [e for e in eng.held if eng.infos[e.gid]["op"] == "WRITE"]
    if not writes:
        return None, False
    fd = os.memfd_create("fh-rto", os.MFD_CLOEXEC)
    ctx.closers.append(lambda: os.close(fd))
    res = srv.write_from_slot(writes[0], fd, len(SECRET), tag)
    return res, res is not None and res > 0 and os.pread(fd, len(SECRET), 0) == SECRET


def _slot_filled(ctx: Ctx, t: str, srv: Served) -> None:
    """The path proof of the zero-copy cases: before the timeout, the held WRITE's slot must
    hold the writer's pages, else slot_unreachable would pass on an empty slot."""
    res, same = _slot_read(ctx, srv, 0x7F0F)
    ctx.result(_case(t, "slot_filled"), same,
               f"{t}: WRITE_FIXED from the held WRITE's slot while held: {ename(res)}"
               + ("" if same else " (not exercised: no page of the writer reached the zero-copy slot)"))


def _verdicts(ctx: Ctx, t: str, srv: Served, clients: list[Client], bound: float) -> None:
    seen, ok = [], True
    for c in clients:
        o = c.poll(0.0)
        if not o:
            seen.append(f"{c.name} still blocked (state {c.state()})")
            ok = False
            continue
        span = o["t1"] - o["t0"]
        what = ename(-o["errno"]) if not o.get("ok") else f"success {o.get('value')!r:.40}"
        seen.append(f"{c.name} {what} after {span:.1f} s")
        ok = ok and not o.get("ok") and o.get("errno") in DEAD and FREQ - 0.5 <= span <= bound
    ctx.result(_case(t, "aborted_in_time"), ok, f"{t}: {'; '.join(seen)} (expected -ECONNABORTED"
               f" or -ENOTCONN after {FREQ}..{bound:.0f} s)")
    eng = srv.engine
    held = list(eng.held)
    if t in ZERO_COPY:
        res, leaked = _slot_read(ctx, srv, 0x7F10)
        ctx.result(_case(t, "slot_unreachable"), res is not None and res < 0,
                   f"{t}: WRITE_FIXED from the held WRITE's slot after the timeout: {ename(res)}"
                   + (" (the client's pages are still reachable)" if leaked else ""))
    # only the held entries' own CQEs: on a slow (debug) kernel the idle entries' REGISTERs,
    # ended by the timeout's abort, may complete in this window too
    n, gids = len(eng.ent_errors), {e.gid for e in held}
    for e in held:
        eng.answer(e)

    def late_commits() -> list[str]:
        return [ename(r) for gid, r, _ in eng.ent_errors[n:] if gid in gids]

    srv.pump(3.0, lambda: len(late_commits()) >= len(held))
    late = late_commits()
    others = len(eng.ent_errors) - n - len(late)
    ctx.result(_case(t, "late_commit_enotconn"), bool(held) and late == ["-ENOTCONN"] * len(held),
               f"{t}: COMMIT of the {len(held)} held request(s) after the timeout: {late}"
               + (f" (and {others} CQE error(s) of idle entries meanwhile)" if others else ""))
    umount_lazy(ctx, srv, _case(t, "umount_after_timeout"), f"{t}: ")


def idle_entries_timeout(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Under a 15 s request timeout, two mounts per ring transport (--transports, else those
    the kernel offers) whose entries all sit idle and are cancelled before any client comes: on
    one the thread that REGISTERed them exits (io_uring cancels its commands), on the other the
    server closes its rings and keeps /dev/fuse open. A read on each then finds no entry: it
    must still end (an error) within the timeout bound, and the periodic scan must find it
    without an oops; every mount unmounts after. All mounts are made first, so every read
    waits for the same scan whatever the number of transports; a transport that cannot be set
    up fails its own cases only."""
    import threading

    knob = "/proc/sys/fs/fuse/default_request_timeout"
    if not os.path.exists(knob):
        for c in ctx.cases:
            ctx.result(c, None, reason=f"no {knob}: kernel without request timeouts")
        return
    if getattr(args, "transports", None) is None:
        have = set(probe().get("transports", ()))
        todo = [t for t in IDLE_RINGS if t in have]
        why = "kernel has no {} transport (probe)"
    else:
        todo = [t for t in IDLE_RINGS if t in args.transports]
        why = "{} is not among --transports (the suite passes the target's promised ones)"
    for t in IDLE_RINGS:
        if t not in todo:
            for c in _idle_cases_of(t):
                ctx.result(c, None, reason=why.format(t))
    sysctls = Sysctls({"default_request_timeout": str(FREQ)}, base="/proc/sys/fs/fuse/")
    ctx.closers.append(sysctls.restore)
    pairs: dict[str, tuple[Served, Served]] = {}
    for i, t in enumerate(todo):
        try:
            pairs[t] = (Served(ctx, f"rti{i}-exit", transport=t, files=DATA, start=False),
                        Served(ctx, f"rti{i}-close", transport=t, files=DATA))
        except Exception as exc:  # noqa: BLE001 - that transport's verdict, not the others'
            for c in _idle_cases_of(t):
                ctx.result(c, False, f"{t}: setup failed: {type(exc).__name__}: {exc}")
    sysctls.restore()  # only connections made above get the timeout
    for t, (exited, closed) in pairs.items():
        exited.engine.auto = closed.engine.auto = True
        th = threading.Thread(target=exited.engine.start, name=f"rti-submitter-{t}")
        th.start()
        th.join(20.0)
        closed.close_rings()
    reads = {(t, v): (srv, Client(ctx, f"r-{v}-{t}", lambda s=srv: read_file(s.path("f")), cpu=0))
             for t, (exited, closed) in pairs.items() for v, srv in (("thread_exit", exited), ("ring_closed", closed))}
    bound = 2 * FREQ + 10 * time_scale()
    end = time.monotonic() + bound + 5
    while time.monotonic() < end and not all(c.done() for _, c in reads.values()):
        for exited, _ in pairs.values():
            exited.pump(0.0)
        time.sleep(0.05)
    for (t, v), (srv, c) in reads.items():
        o = c.poll(0.0)
        span = (o["t1"] - o["t0"]) if o else None
        what = ("STILL BLOCKED" if o is None else f"success {o.get('value')!r:.30}" if o.get("ok")
                else f"{ename(-o['errno'])} after {span:.1f} s")
        ok = bool(o) and not o.get("ok") and span is not None and span <= bound
        ctx.result(_case(t, f"{v}_client_ends_in_time"), ok, f"{t} {v}: the read {what} (bound {bound:.0f} s)")
        srv.conn.abort()
        umount_lazy(ctx, srv, _case(t, f"{v}_umount"), f"{t} {v}: ")


def _idle_cases_of(transport: str) -> tuple[str, ...]:
    """request-timeout-idle's cases for one transport."""
    return tuple(_case(transport, s) for s in IDLE_STEPS)
