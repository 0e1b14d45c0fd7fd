"""Request timeouts over io-uring: a server that stops answering, caught by the kernel's scan.

`fs.fuse.default_request_timeout` gives every new connection a request timeout. The kernel
scans a connection every FUSE_TIMEOUT_TIMER_FREQ seconds (15, fs/fuse/req_timeout.c, also
the smallest timeout it applies) and aborts it once the oldest request of any list, ring
entries included (fuse_uring_request_expired), is older than the timeout. So a request the
server holds must end between 15 and 30 s after it was sent, never before and never later.

One mount per ring transport the kernel has, each holding a READ and a WRITE, all at once:
the scenario waits for the scan once, whatever the number of transports. request-timeout-idle
does the same with two mounts per transport whose queue 0 has no entry left when the read comes
(its entries' thread exited and requests used them up, or its rings were closed).
"""

from __future__ import annotations

import errno
import os
import time

from guest import ZERO_COPY
from guest import mount as M
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
    the kernel offers) whose entries of queue 0 are all gone before any read comes. On one the
    thread that REGISTERed them exits; io_uring does not cancel them then (an exiting thread
    waits only for its requests on io_uring files, 7.3.4 io_uring/cancel.c:626), so stat
    clients pinned to CPU 0 use them up: each meets an entry whose task work can no longer run
    in its task, the entry posts -ECANCELED and is freed (teardown.MET_EXITED). On the other
    the server closes its rings and keeps /dev/fuse open (the ring's exit cancels every parked
    entry, fs/fuse/dev_uring.c fuse_uring_cancel). A read from CPU 0 on each then finds no entry:
    only the periodic scan can end it, with ECONNABORTED/ENOTCONN, between 15 and 30 s (plus a
    margin) after it started, without an oops; every mount unmounts after. All mounts are made
    and emptied first, so every read waits for the same scan whatever the number of transports;
    a transport that cannot be set up fails its own cases only.

    Path proofs (`not exercised: ...` otherwise): on the thread-exit mount every entry of queue
    0 posted its final CQE (an error) before the read started; on both, SAMPLE s after the reads
    started each read was still blocked with fusectl `waiting` >= 1 (its request in the kernel,
    taken by nobody), and it ended no sooner than its request could expire."""
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
    proofs: dict[tuple[str, str], str] = {}
    for t, (exited, closed) in pairs.items():
        proofs.update(_empty_queue0(ctx, t, exited, closed))
    reads = {(t, v): (srv, Client(ctx, f"r-{v}-{t}", lambda s=srv: read_file(s.path("f")), cpu=0))
             for t, (exited, closed) in pairs.items() for v, srv in (("thread_exit", exited), ("ring_closed", closed))}
    minors = {key: M.minor_of(srv.mnt) for key, (srv, _) in reads.items()}
    bound = 2 * FREQ + 10 * time_scale()
    t0 = time.monotonic()
    end = t0 + bound + 5
    samples: dict[tuple[str, str], tuple[bool, int | None]] = {}
    while time.monotonic() < end and not all(c.done() for _, c in reads.values()):
        for exited, _ in pairs.values():
            exited.pump(0.0)
        if not samples and time.monotonic() >= t0 + SAMPLE:
            samples = {key: (c.done(), M.waiting(minors[key])) for key, (_, c) in reads.items()}
        time.sleep(0.05)
    for (t, v), (srv, c) in reads.items():
        ok, what = idle_read_verdict(c.poll(0.0), samples.get((t, v), (True, None)), bound, proofs[(t, v)])
        ctx.result(_case(t, f"{v}_client_ends_in_time"), ok, f"{t} {v}: {what}")
        srv.conn.abort()
        umount_lazy(ctx, srv, _case(t, f"{v}_umount"), f"{t} {v}: ")


def _empty_queue0(ctx: Ctx, t: str, exited: Served, closed: Served) -> dict[tuple[str, str], str]:
    """Leave queue 0 of both of transport t's mounts without entries: the thread that REGISTERs
    exited's entries exits and stat clients use them up (_drain); closed's rings are closed.
    Returns each mount's path proof so far ('' or 'not exercised: ...') by (t, variant)."""
    import threading

    exited.engine.auto = closed.engine.auto = True
    failed: list[BaseException] = []
    th = threading.Thread(target=_start_into(exited.engine, failed), name=f"rti-submitter-{t}")
    th.start()
    th.join(20.0)
    registered, total = closed.engine.live, len(closed.engine.entries)
    closed.close_rings()
    gone = "is still alive" if th.is_alive() else f"failed: {failed[0]}" if failed else ""
    return {(t, "ring_closed"): "" if registered == total else
            f"not exercised: {registered} of {total} entries registered before the rings closed",
            (t, "thread_exit"): f"not exercised: the registering thread {gone}" if gone else _drain(ctx, exited, t)}


def _start_into(eng, failed: list) -> object:  # noqa: ANN001
    """A thread body: eng.start() (every REGISTER), its exception appended to failed."""
    def body() -> None:
        try:
            eng.start()
        except BaseException as exc:  # noqa: BLE001 - the transport's path proof
            failed.append(exc)
    return body


def _drain(ctx: Ctx, srv: Served, t: str) -> str:
    """Use up queue 0's entries of a mount whose registering thread exited: stat clients pinned
    to CPU 0, one at a time (at most one more than the queue's depth), until every entry of
    queue 0 has posted an error CQE; prints what each got. Returns drained()'s verdict."""
    eng = srv.engine
    q0 = [e.gid for e in eng.entries if e.qid == 0]

    def errors() -> int:
        return sum(g in q0 for g, _, _ in eng.ent_errors)

    srv.pump(0.3)  # what the thread's exit made the kernel post (7.3.4: nothing)
    at_exit = errors()
    outs: list[str] = []
    for i in range(len(q0) + 1):
        if not any(eng.entries[g].live for g in q0):
            break
        n = errors()
        c = Client(ctx, f"drain{i}-{t}", lambda: os.stat(srv.path("f")).st_size, cpu=0)
        srv.pump(min(5.0, ctx.left()), c.done)
        # the entry's CQE: completions from task work are flushed after the request has ended
        srv.pump(min(2.0, ctx.left()), lambda n=n: errors() > n)
        o = c.poll(0.0)
        outs.append("blocked" if o is None else f"size {o['value']}" if o.get("ok") else ename(-(o.get("errno") or 0)))
        if o is None:
            break
    ends = {g: r for g, r, _ in eng.ent_errors if g in q0}
    ctx.diag(f"{t} thread_exit: queue 0's entries {q0}: {at_exit} error CQE(s) after the thread exited; stat "
             f"clients on CPU 0 then got {outs or 'nothing (none needed)'}; final CQEs "
             f"{ {g: ename(r) for g, r in ends.items()} }")
    return drained(q0, ends, [g for g in q0 if eng.entries[g].live], len(outs))


def drained(q0: list[int], ends: dict[int, int], live: list[int], clients: int) -> str:
    """The thread-exit mount's path proof: '' when every entry of queue 0 (gids q0) has posted
    its final CQE, an error (ends: gid -> res) and none is live; else 'not exercised: ...'
    (clients: the stat clients sent to use them up)."""
    if not live and set(ends) >= set(q0) and all(r < 0 for r in ends.values()):
        return ""
    return (f"not exercised: entries {live or sorted(set(q0) - set(ends))} of queue 0 still took requests "
            f"(no final CQE) after the registering thread exited and {clients} stat client(s) met them")


#: When the idle reads are sampled, s after they start: well before any request can expire (FREQ).
SAMPLE = 3.0


def idle_read_verdict(o: dict | None, sample: tuple[bool, int | None], bound: float,
                      missing: str) -> tuple[bool, str]:
    """One idle mount's read: o = the client's result (None: still blocked), sample = (ended?,
    fusectl waiting) SAMPLE s after the reads started, bound = the latest end (s after the read
    started), missing = the mount's own path proof ('' or 'not exercised: ...'). (passed?, why)."""
    span = (o["t1"] - o["t0"]) if o else None
    what = ("the read is STILL BLOCKED" if o is None else f"the read succeeded ({o.get('value')!r:.30})"
            if o.get("ok") else f"the read failed with {ename(-(o.get('errno') or 0))} after {span:.1f} s")
    if missing:
        return False, f"{missing}; {what}"
    ended, waiting = sample
    if ended:
        return False, f"not exercised: the read had ended {SAMPLE:.0f} s in, before its request could expire; {what}"
    if (waiting or 0) < 1:
        return False, (f"not exercised: fusectl waiting {waiting} {SAMPLE:.0f} s in, the read blocked: its request "
                       f"was not in the kernel; {what}")
    seen = f"blocked with fusectl waiting {waiting} {SAMPLE:.0f} s in; {what} (expected -ECONNABORTED or " \
           f"-ENOTCONN after {FREQ}..{bound:.0f} s)"
    if o is None or o.get("ok") or o.get("errno") not in DEAD or span > bound:
        return False, seen
    if span < FREQ - 0.5:
        return False, f"not exercised: ended before its request could expire (not by the timeout scan): {seen}"
    return True, seen


def _idle_cases_of(transport: str) -> tuple[str, ...]:
    """request-timeout-idle's cases for one transport."""
    return tuple(_case(transport, s) for s in IDLE_STEPS)
