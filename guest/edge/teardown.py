"""Teardown with requests in flight (T1-T5), a mount/umount loop, and P2.

Clients must end with ENOTCONN/ECONNABORTED, never hang. P2 (a bad REGISTER
on a serving connection) is destructive; it always ends with an abort.
"""

from __future__ import annotations

import errno
import os
import signal
import time

from guest import mount as M
from guest.edge.clients import Client, fork_server, read_file, wait_all
from guest.edge.core import Ctx, _reap, ename
from guest.edge.served import Served

E = errno
DEAD = (E.ENOTCONN, E.ECONNABORTED)
DATA = {b"f": b"teardown\n" * 100}


def _errno_case(ctx: Ctx, case: str, c: Client, timeout: float) -> None:
    out = c.poll(min(timeout, ctx.left()))
    ok = bool(out) and not out.get("ok") and out.get("errno") in DEAD
    ctx.result(case, ok, f"client {c.name}: {out or 'still blocked, state ' + c.state()}")


def held_path(eng, info: dict) -> tuple[bool, str]:  # noqa: ANN001
    """The path proof of a held request: on a zero-copy transport its pages must be in the
    entry's buffer slot (FUSE_URING_ENT_ZERO_COPY, or a zero-copy op of generation D), else
    the teardown never met a filled slot. (proved?, what was held)."""
    what = f"{info['op']} held on entry {info['entry']} (queue {info['qid']})"
    if not eng.zero_copy:
        return True, what
    if info.get("zero_copy"):
        return True, f"{what}, its pages in zero-copy slot {eng.entries[info['entry']].slot}"
    return False, f"{what}: not exercised: the request came without its pages in a zero-copy slot"


def _hold_read(ctx: Ctx, tag: str, args) -> tuple[Served, Client]:  # noqa: ANN001
    srv = Served(ctx, tag, transport=args.transport, files=DATA)
    srv.engine.auto = True
    srv.engine.hold = lambda i: i["op"] == "READ"
    c = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)
    if not srv.wait_held(1, 20.0):
        raise RuntimeError(f"READ never reached the ring: {srv.engine.log}")
    ctx.result("read_held", *held_path(srv.engine, srv.engine.infos[srv.engine.held[0].gid]))
    return srv, c


def _after_abort(ctx: Ctx, srv: Served, c: Client, how: str) -> None:
    eng = srv.engine
    live_before = eng.live
    srv.pump(5.0, lambda: eng.live <= len(eng.held))
    idle_res = sorted({ename(r) for _, r, _ in eng.ent_errors})
    ctx.result("idle_entries_enotconn", eng.live <= len(eng.held) and idle_res == ["-ENOTCONN"],
               f"after {how}: {live_before} live entries, {eng.live} left; CQE res {idle_res}")
    _errno_case(ctx, "client_gets_enotconn", c, 10.0)
    n = len(eng.ent_errors)
    held = list(eng.held)
    for e in held:
        eng.answer(e)
    srv.pump(3.0, lambda: len(eng.ent_errors) > n)
    late = [ename(r) for _, r, _ in eng.ent_errors[n:]]
    ctx.result("held_commit_enotconn", bool(held) and late == ["-ENOTCONN"] * len(held),
               f"COMMIT of the {len(held)} held request(s): {late}")


def umount_inflight(ctx: Ctx, args) -> None:  # noqa: ANN001
    """T1: umount (MNT_FORCE, then lazy) while the server holds a READ."""
    srv, c = _hold_read(ctx, "t1", args)
    try:
        M.umount(srv.mnt, M.MNT_FORCE)
        ctx.diag("umount2(MNT_FORCE): 0")
    except OSError as exc:
        ctx.diag(f"umount2(MNT_FORCE): {exc}")
    _after_abort(ctx, srv, c, "umount -f")


def abort_fusectl(ctx: Ctx, args) -> None:  # noqa: ANN001
    """T2: write 1 to /sys/fs/fuse/connections/N/abort while a READ is held."""
    srv, c = _hold_read(ctx, "t2", args)
    ctx.result("abort_written", srv.conn.abort(), f"minor {M.minor_of(srv.mnt)}")
    _after_abort(ctx, srv, c, "fusectl abort")
    later = Client(ctx, "later", lambda: os.stat(srv.path("f")).st_size, cpu=0)
    _errno_case(ctx, "later_ops_enotconn", later, 10.0)


def kill_server(ctx: Ctx, args) -> None:  # noqa: ANN001
    """T3: SIGKILL the server process while it holds a READ (the LOOKUP and OPEN before it answered)."""
    def serve(w: int) -> None:
        srv = Served(ctx, "t3", transport=args.transport, files=DATA)
        srv.engine.auto = True  # LOOKUP and OPEN answered; the READ held (over zero-copy: its
        srv.engine.hold = lambda i: i["op"] == "READ"  # pages in the entry's slot)
        os.write(w, b"R")
        srv.wait_held(1, 60.0)
        proved = bool(srv.engine.held) and held_path(srv.engine, srv.engine.infos[srv.engine.held[0].gid])[0]
        os.write(w, b"H" if proved else b"h")  # h: held, but not on the path the transport names
        time.sleep(120)

    pid, r, mnt = fork_server(ctx, "t3", serve)
    got = b""
    end = time.monotonic() + min(30.0, ctx.left())
    c = None
    while time.monotonic() < end and not (b"H" in got or b"h" in got):
        import select
        if select.select([r], [], [], 0.2)[0]:
            chunk = os.read(r, 8)
            if not chunk:
                break
            got += chunk
            if chunk.startswith(b"R") and c is None:
                c = Client(ctx, "reader", lambda: read_file(f"{mnt}/f"), cpu=0)
    os.close(r)
    zc = " (h: not exercised: the held request's pages were not in a zero-copy slot)" if b"h" in got else ""
    ctx.result("server_holds_request", b"H" in got, f"server said {got!r}{zc}")
    os.kill(pid, signal.SIGKILL)
    ctx.diag(f"server reaped: {_reap(pid, 10.0) is not None}")
    if c is None:
        ctx.result("client_gets_enotconn", False, "no client was started")
        return
    _errno_case(ctx, "client_gets_enotconn", c, 10.0)
    later = Client(ctx, "later", lambda: os.stat(f"{mnt}/f").st_size, cpu=0)
    _errno_case(ctx, "later_ops_enotconn", later, 10.0)


def ring_closed(ctx: Ctx, args) -> None:  # noqa: ANN001
    """T4: close the ring fd, keep /dev/fuse: clients stay killable, abort recovers."""
    srv = Served(ctx, "t4", transport=args.transport, files=DATA)
    srv.engine.auto = True
    a = Client(ctx, "before", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(20.0, a.done)
    out = a.poll(0.0)
    zc = srv.counters.snapshot().get("zero_copy", {})
    proved = not srv.engine.zero_copy or zc.get("read", 0) > 0
    ctx.result("served_before_close", bool(out and out.get("ok")) and proved, f"client {str(out)[:120]}"
               + ("" if proved else f"; not exercised: no READ went through a zero-copy slot ({zc})"))
    srv.close_rings()
    time.sleep(0.5)
    b = Client(ctx, "after", lambda: os.stat(srv.path("f")).st_size, cpu=0)
    out = b.poll(5.0)
    ctx.diag(f"request after the ring closed: {out or 'blocked after 5 s, state ' + b.state()}")
    c = Client(ctx, "victim", lambda: os.stat(srv.path("f")).st_size, cpu=0)
    time.sleep(1.0)
    if c.poll(0.0) is None:
        ctx.result("client_killable", not c.alive_after_kill(5.0),
                   f"SIGKILL of a blocked client (state before {c.state()})")
    else:
        ctx.result("client_killable", False, f"not exercised: the client did not block: {c.poll(0.0)}")
    blocked = b.poll(0.0) is None  # judged before the abort: the abort itself may end it at once
    ctx.result("abort_written", srv.conn.abort(), "fusectl abort")
    if blocked:
        _errno_case(ctx, "blocked_client_released", b, 10.0)
    else:
        ctx.result("blocked_client_released", False, f"not exercised: the client had finished before the "
                   f"abort: {b.poll(0.0)}")


#: The CQE res, and the client's errno, of an entry whose task is gone when a request meets it:
#: task_work_add() to the dead thread fails, so io_uring runs the command's task work from a
#: kworker with tw.cancel set (7.3.4 io_uring/tw.c:267-270, io_tctx_fallback_work), and
#: fuse_uring_send_in_task's cancel branch posts -ECANCELED and ends the request with it
#: (fs/fuse/dev_uring.c:1753-1767; the same in 7.2.13 and kmbuf v4).
MET_EXITED = -E.ECANCELED
#: A request that met a cancelled entry: the errors its client may get (a clean end, not a hang).
STRANDED_CLEAN = (*DEAD, E.ECANCELED, E.EIO)


def met_exited_entry(out: dict | None, cancelled: list[int], delivered: list[dict], want: str,
                     blocked: str = "") -> tuple[bool, str]:
    """T5's verdict on the client's one request, sent from queue 0's CPU after the thread that
    REGISTERed every entry exited. out: the client's result (None: still blocked; `blocked`
    says where); cancelled: gids of queue-0 entries that posted MET_EXITED since the client
    started (the request met that entry); delivered: the server's log of requests it received
    on queue 0 since then; want: the file's content. (passed?, why); a request that met no
    entry of the exited thread is `not exercised`."""
    met = (f"its request met entry {cancelled[0]} of queue 0 (CQE {ename(MET_EXITED)}: its task work ran "
           f"cancelled, its thread gone)" if cancelled else
           f"its request reached the server on entry {delivered[0]['entry']} of queue 0 ({delivered[0]['op']})"
           if delivered else "")
    if out is None:
        return False, (f"the client is STRANDED ({blocked or 'still blocked'}); "
                       + (met or "not exercised: its request met no entry of the exited thread"))
    if not met:
        return False, (f"not exercised: the client's request met no entry of the exited thread (no entry "
                       f"CQE {ename(MET_EXITED)} and nothing delivered on queue 0); client {str(out)[:120]}")
    if out.get("ok"):
        if not delivered:
            return False, f"{met}, yet the client SUCCEEDED WITHOUT THE SERVER: {str(out)[:80]}"
        right = out.get("value") == want
        return right, f"{met}; the client read {'the right' if right else 'WRONG'} bytes"
    code = out.get("errno")
    name = errno.errorcode.get(code, str(code)) if code else out.get("error", "?")
    return code in STRANDED_CLEAN, f"{met}; the client failed with {name}"


def thread_exit(ctx: Ctx, args) -> None:  # noqa: ANN001
    """T5: the thread that REGISTERed the entries exits; the ring stays open (this thread
    keeps it). io_uring does not cancel the entries at that exit (7.3.4 io_uring/cancel.c:626,
    io_uring_cancel_generic: an exiting thread waits only for requests on io_uring files), so
    a request from CPU 0 then meets one of queue 0's idle entries, whose task work can no
    longer run in its task: it must end with an error for the client (7.3 by code reading:
    -ECANCELED to client and CQE), never a hang. Path proof: that entry's CQE -ECANCELED, or
    the request at the server (then the client must read the file); else `not exercised`."""
    import threading

    srv = Served(ctx, "t5", transport=args.transport, files=DATA, start=False)
    eng = srv.engine
    eng.auto = True
    failed: list[BaseException] = []

    def register() -> None:
        try:
            eng.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    t = threading.Thread(target=register, name="t5-submitter")
    t.start()
    t.join(20.0)
    ctx.result("submitter_registered_and_exited", not t.is_alive() and not failed,
               f"thread alive={t.is_alive()} error={failed[:1]}; {eng.live} live entries")
    srv.pump(0.5)  # CQEs the thread's exit made the kernel post (7.3.4: none)
    ctx.diag(f"entry CQEs after the thread exited: {[ename(r) for _, r, _ in eng.ent_errors] or 'none'}; "
             f"{eng.live} live entries")
    n0, l0 = len(eng.ent_errors), len(eng.log)
    minor = M.minor_of(srv.mnt)
    c = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(10.0, c.done)
    out = c.poll(0.0)
    if out is None:
        out = c.poll(min(5.0, ctx.left()))
    blocked = "" if out else f"after 15 s, state {c.state()}, fusectl waiting {M.waiting(minor)}"

    def cancelled() -> list[int]:
        return [g for g, r, _ in eng.ent_errors[n0:] if r == MET_EXITED and eng.entries[g].qid == 0]

    srv.pump(1.0, lambda: bool(cancelled()))  # the entry's CQE, posted as the request ended
    delivered = [i for i in eng.log[l0:] if i["qid"] == 0]
    ok, why = met_exited_entry(out, cancelled(), delivered, DATA[b"f"].decode("latin-1"), blocked)
    ctx.result("client_not_stranded", ok, why)
    ctx.diag(f"client {str(out)[:160] if out else 'still blocked'}; entry CQEs after it started: "
             f"{[(g, ename(r)) for g, r, _ in eng.ent_errors[n0:]] or 'none'}; {eng.live} live entries; "
             f"requests served {len(eng.answered)}")
    ctx.result("abort_written", srv.conn.abort(), "fusectl abort")


def _connections() -> set[str]:
    M.ensure_fusectl()
    try:
        return set(os.listdir(M.FUSECTL))
    except OSError:
        return set()


def mount_loop(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Mount, serve one read, umount, release every entry: N times, nothing leaks."""
    base = _connections()
    fails = []
    t0 = time.monotonic()
    for i in range(args.iterations):
        srv = Served(ctx, f"loop{i}", transport=args.transport, queue_depth=1, pool_bufs=1,
                     files=DATA)
        srv.engine.auto = True
        c = Client(ctx, f"c{i}", lambda s=srv: read_file(s.path("f")), cpu=i % srv.conn.nr_queues)
        srv.pump(20.0, c.done)
        out = c.poll(0.0)
        try:
            M.umount(srv.mnt)
            um = "0"
        except OSError as exc:
            um = str(exc)
        released = srv.pump(10.0, lambda s=srv: s.engine.live == 0)
        res = sorted({ename(r) for _, r, _ in srv.engine.ent_errors})
        if not (out and out.get("ok") and um == "0" and released and res == ["-ENOTCONN"]):
            fails.append(f"#{i}: client {str(out)[:80]} umount {um} released {released} {res}")
        srv.close_rings()
        srv.conn.close()
        srv.reader.join(2.0)
        ctx.left()
    ctx.diag(f"{args.iterations} iterations in {time.monotonic() - t0:.1f}s")
    for f in fails[:5]:
        ctx.diag(f)
    ctx.result("all_iterations_ok", not fails, f"{len(fails)} failed iterations")
    leaked = _connections() - base
    ctx.result("no_leaked_connections", not leaked, f"leftover fusectl entries {sorted(leaked)}")


def register_after_ready(ctx: Ctx, args) -> None:  # noqa: ANN001
    """P2: one bad REGISTER on a serving connection must not strand later requests."""
    srv = Served(ctx, "p2", transport=args.transport, files=DATA)
    srv.engine.auto = True
    a = Client(ctx, "before", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(20.0, a.done)
    ctx.result("served_before", bool(a.poll(0.0) and a.poll(0.0).get("ok")), str(a.poll(0.0))[:120])
    n = srv.conn.nr_queues
    ctx.expect_res("bad_register_einval", srv.bad_register(n), -E.EINVAL, f"REGISTER qid={n}:")
    b = Client(ctx, "after", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(10.0, b.done)
    out = b.poll(0.0)
    errs = [ename(r) for _, r, _ in srv.engine.ent_errors]
    ctx.result("connection_survives_bad_register", bool(out and out.get("ok")),
               f"client after 10 s: {out or 'blocked, state ' + b.state()}; "
               f"deliveries {len(srv.engine.log)}, entry CQE errors {errs[:8]}")
    ctx.result("abort_written", srv.conn.abort(), "fusectl abort (recovery)")
    ok = wait_all([b], 10.0)
    ctx.result("abort_releases_client", ok, f"client {b.poll(0.0) or 'state ' + b.state()}")
