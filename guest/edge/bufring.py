"""Generation B (the bufring series v2, 10/14): registration checks, ENOBUFS starvation, the
idle entry that is not woken (PORT-NOTES D4), and the NULL payload area (D3, a crash probe).

PORT-NOTES section 7 is the authority for what each case expects. Clients are pinned to CPU 0,
so every request lands on queue 0. A failed REGISTER disables io-uring for the connection:
each registration case gets a fresh mount.
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
import os
import time

from guest.edge import sqe as S
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.conn import CMD_UD
from guest.edge.core import Ctx, ename
from guest.edge.served import Served
from guest.edge.starve import _files, _waits
from guest.fuse import proto as P
from guest.transports.bufring import register_req
from guest.uring import abi
from guest.uring.ring import addr_of

#: MAP_NORESERVE (Linux, asm-generic/mman-common.h): Python's mmap module names it only from 3.13.
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)

EINVAL = -22
DELAY = 0.1  # seconds each starvation reply waits: in-flight payload requests outnumber buffers


def _register(srv: Served, qid: int, flags: int, buf_size: int, depth: int, hdr_len: int,
              payload: tuple[int, int], buf_index: int) -> int | None:
    """One REGISTER on queue qid: its CQE res, or None (accepted: a REGISTER completes only
    when a request arrives)."""
    e = srv.engine
    iov = (abi.Iovec * 2)(abi.Iovec(e.hdr_addr, hdr_len), abi.Iovec(payload[0] or None, payload[1]))
    e.ring.keep(iov)
    srv._seq += 1
    ud = CMD_UD | (0x8000 + srv._seq)
    off = e.ring.get_sqe()
    e.ring.sqes[off:off + S.SQE_SIZE] = S.uring_cmd_sqe(
        srv.conn.fd, P.URING_CMD_REGISTER, ud, register_req(qid, buf_size, depth, flags),
        ctypes.addressof(iov), 2, 0, buf_index)
    srv.pump(1.0, lambda: ud in e.aux)
    return e.aux.get(ud)


def validation(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Each bad first REGISTER of a queue gets -EINVAL; the boundary values are accepted.

    Each bad case is proved by a control, the same REGISTER with the one field fixed, that
    must park (else: not exercised). Checks (bufring-v2-10-on-7.2.mbx lines, 10/14): unknown
    flag :578; queue_depth 0 or buf_size 0 :162; headers :175; buf_size < max_payload_sz
    :178; payload below one buffer, more than U16_MAX buffers :182; buf_index >= queue_depth
    :520; flags differing from the queue's :589. Controls: `headers_exact_ok` (fresh mount) for
    the one-field cases of the first REGISTER, `buf_index_last_ok` for buf_index, `bufs_65535_ok`
    for 65536 buffers; for the two mixed cases the second REGISTER with the other init.flags,
    sent on the same mount before the bad one (an existing queue's REGISTER reads only qid,
    flags and, for a bufring queue, buf_index; for a legacy one its iovecs).
    Documented limits: depth_0 and buf_size_0 cannot be told from a later check with
    the same errno: queue_depth 0 would also fail `ent->id >= queue_depth` (:520), buf_size 0
    `buf_size < max_payload_sz` (:178); their controls show only that the REGISTER gets that far."""
    def fresh(tag: str, **kw) -> Served:  # noqa: ANN003
        srv = Served(ctx, tag, transport="bufring", queue_depth=2, pool_bufs=2, start=False, **kw)
        srv.engine.alloc()
        return srv

    def run(name: str, steps, control_at: int = -1) -> tuple[int | None, int | None]:  # noqa: ANN001
        """steps on a fresh mount; each but the last must park (else None, None after a
        not-exercised failure). (the last step's res, the res of step control_at or None)."""
        srv = fresh(f"v{len(ctx.done)}")
        e = srv.engine
        todo = steps(e.payload_size, 2 * P.URING_HDR_SIZE, (e.payload_addr[0], 2 * e.buf_size))
        got = ctl = None
        for i, (flags, bsz, depth, hlen, pl, bi) in enumerate(todo):
            got = _register(srv, 0, flags, bsz, depth, hlen, pl, bi)
            if i == control_at:
                ctl = got
            if got is not None and i < len(todo) - 1 and i != control_at:
                ctx.result(name, False, f"not exercised: REGISTER {i + 1} of {len(todo)} (it sets "
                           f"the queue up) was refused: {ename(got)}")
                got = ctl = None
                break
        srv.conn.abort()
        return got, ctl

    def ok_case(name: str, steps) -> int | None:  # noqa: ANN001
        got, _ = run(name, steps)
        ctx.result(name, got is None, f"REGISTER CQE res {ename(got)} (expected accepted: no CQE)")
        return got

    def bad(name: str, steps, control: int | None, what: str,  # noqa: ANN001
            ctl_what: str = "headers_exact_ok, the same with the field fixed",
            control_at: int = -1) -> None:
        got, ctl = run(name, steps, control_at)
        if control_at >= 0:
            control = ctl
        ctx.expect_res_control(name, got, EINVAL, control, control is None, f"REGISTER {what}:",
                               ctl_what)

    B = P.URING_BUFRING
    L = (0, 0, 0, P.URING_HDR_SIZE)  # legacy REGISTER: flags, buf_size, depth, header length
    exact = ok_case("headers_exact_ok", lambda p, h, y: [(B, p, 2, h, y, 0)])
    last = ok_case("buf_index_last_ok", lambda p, h, y: [(B, p, 2, h, y, 1)])
    bad("unknown_flag_einval", lambda p, h, y: [(B | 2, p, 2, h, y, 0)], exact,
        "flags BUFRING|2 (:578)")
    lim = "the same -EINVAL also comes from"
    bad("depth_0_einval", lambda p, h, y: [(B, p, 0, h, y, 0)], exact,
        f"queue_depth 0 (:162; limit: {lim} buf_index 0 >= queue_depth 0, :520)")
    bad("buf_size_0_einval", lambda p, h, y: [(B, 0, 2, h, y, 0)], exact,
        f"buf_size 0 (:162; limit: {lim} buf_size < max_payload_sz, :178)")
    bad("headers_short_einval", lambda p, h, y: [(B, p, 2, h - 1, y, 0)], exact,
        "header iovec one byte short of queue_depth headers (:175)")
    bad("buf_size_below_payload_einval", lambda p, h, y: [(B, p - 1, 2, h, y, 0)], exact,
        "buf_size max_payload_sz - 1 (:178)")
    bad("payload_below_one_buffer_einval", lambda p, h, y: [(B, p, 2, h, (y[0], p - 1), 0)],
        exact, "payload iovec one byte short of a buffer (:182)")
    bad("buf_index_depth_einval", lambda p, h, y: [(B, p, 2, h, y, 2)], last,
        "buf_index 2 = queue_depth (:520)", "buf_index_last_ok, buf_index 1")
    other = "the same with the other init.flags, before it on the same mount"
    bad("bufring_then_legacy_einval", lambda p, h, y: [
        (B, p, 2, h, y, 0), (B, *L[1:], (y[0], p), 1), (*L, (y[0], p), 1)], None,
        "legacy (init.flags 0) on a bufring queue (:589)", other, control_at=1)
    bad("legacy_then_bufring_einval", lambda p, h, y: [
        (*L, (y[0], p), 0), (0, p, 2, h, y, 1), (B, p, 2, h, y, 1)], None,
        "BUFRING on a legacy queue (:589)", other, control_at=1)
    # 65536 x 8 KiB buffers in an unbacked mapping (only access_ok is checked at setup)
    got = {}
    for nbufs in (65535, 65536):
        srv = Served(ctx, f"n{nbufs}", transport="bufring", queue_depth=2, pool_bufs=1, start=False,
                     max_write=4096, max_pages=1)
        srv.engine.alloc()
        big = mmap.mmap(-1, nbufs * 8192, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        base = addr_of(big)  # never touched: no page is populated
        got[nbufs] = _register(srv, 0, P.URING_BUFRING, 8192, 2, 2 * P.URING_HDR_SIZE,
                               (base, nbufs * 8192), 0)
        ctx.diag(f"max_payload_sz {srv.engine.payload_size}, {nbufs} buffers: CQE res "
                 f"{ename(got[nbufs])}")
        srv.conn.abort()
        ctx.closers.append(big.close)
    ctx.result("bufs_65535_ok", got[65535] is None, f"CQE res {ename(got[65535])} (expected "
               "accepted: no CQE)")
    ctx.expect_res_control("bufs_65536_einval", got[65536], EINVAL, got[65535], got[65535] is None,
                           "REGISTER with 65536 buffers (:182):", "65535 buffers (bufs_65535_ok)")


def _round(ctx: Ctx, tag: str, nbufs: int, depth: int, readers: int, syncers: int) -> tuple[bool, str]:
    """readers payload clients (open, read, close) and syncers no-payload ones (fsync on a file
    opened first) at once on queue 0: (all completed with their data and no ENOBUFS, detail)."""
    files = _files(max(readers, syncers, 1))
    srv = Served(ctx, tag, transport="bufring", queue_depth=depth, pool_bufs=nbufs, files=files)
    srv.engine.opts = dataclasses.replace(srv.engine.opts, delay=DELAY)  # replies after DELAY s
    srv.engine.auto = True
    t0 = time.monotonic()
    names = sorted(files)
    clients = [Client(ctx, f"R{i}", (lambda p: lambda: read_file(p))(srv.path(names[i].decode())), cpu=0)
               for i in range(readers)]

    def syncer(path: str):  # noqa: ANN202
        def fn() -> str:
            fd = os.open(path, os.O_RDWR)
            os.fsync(fd)
            os.close(fd)
            return "synced"
        return fn
    clients += [Client(ctx, f"S{i}", syncer(srv.path(names[i].decode())), cpu=0) for i in range(syncers)]
    srv.pump(min(60.0, ctx.left() - 5), lambda: all(c.done() for c in clients))
    ok = wait_all(clients, 0.1)
    bad = [c.name for c in clients if not (c.result and c.result.get("ok") and (
        c.result["value"] == "synced" if c.name[0] == "S"
        else c.result["value"].encode("latin-1") == files[names[int(c.name[1:])]]))]
    enobufs = [c.name for c in clients if (c.result or {}).get("errno") == 105]
    worst = _waits(ctx, srv, clients, t0)
    b = srv.counters.snapshot()
    detail = (f"{nbufs} buffers / {depth} entries, {readers} readers + {syncers} fsyncs: done "
              f"{sum(c.done() for c in clients)}/{len(clients)}, wrong {bad}, ENOBUFS {enobufs}, "
              f"high water {b['pool']['high_water']}, bufring {b['bufring']}, worst wait {worst * 1000:.0f} ms")
    # the path is exercised when requests were queued for a buffer (waited) and never more
    # buffers were held than exist
    exercised = (b["bufring"]["payload"] >= readers and b["bufring"]["waited"] >= 1
                 and b["pool"]["high_water"] <= nbufs)
    srv.conn.abort()
    return ok and not bad and not enobufs and exercised and b["bufring"]["shared"] == 0, detail


def starve(ctx: Ctx, args) -> None:  # noqa: ANN001
    """ENOBUFS starvation: fewer payload buffers than entries and in-flight payload requests."""
    for case, shape in (("one_buffer_two_entries", (1, 2, 3, 0)), ("two_buffers_eight_entries", (2, 8, 6, 0)),
                        ("mixed_payload_and_none", (1, 4, 3, 3))):
        ok, detail = _round(ctx, f"s{len(ctx.done)}", *shape)
        ctx.result(case, ok, detail)


def stall(ctx: Ctx, args) -> None:  # noqa: ANN001
    """D4: 1 buffer, 2 entries. With both entries busy, a payload request PB, an fsync NC and a
    payload request PD queue up. The entry without a buffer commits (PB finds no buffer: it goes
    idle), the buffer holder commits twice (PB, then NC, which recycles the buffer). PD is now
    queued with an idle entry and a free buffer: it must be delivered without another commit."""
    files = _files(4)
    srv = Served(ctx, "d4", transport="bufring", queue_depth=2, pool_bufs=1, files=files)
    eng = srv.engine
    eng.auto = True
    names = ("A", "N0", "B", "C", "D")
    go, leave = {n: os.pipe() for n in names}, {n: os.pipe() for n in names}

    def client(name: str, path: str, op):  # noqa: ANN001, ANN202
        def fn() -> str:  # open first; one request when told; close (FLUSH) only at the end
            fd = os.open(path, os.O_RDWR)
            os.read(go[name][0], 1)
            op(fd)
            os.read(leave[name][0], 1)
            return "ok"
        return Client(ctx, name, fn, cpu=0)

    payload, none = (lambda fd: os.fstat(fd)), os.fsync  # GETATTR has an out-arg, FSYNC none
    cs = {n: client(n, srv.path(f), op) for n, f, op in (
        ("A", "f0", payload), ("N0", "f1", none), ("B", "f2", payload), ("C", "f3", none), ("D", "f0", payload))}
    srv.pump(15.0, lambda: sum(i["op"] == "OPEN" for i in eng.log) >= 5 and not eng.held)
    srv.pump(0.5)
    pay = ("GETATTR", "STATX")
    eng.hold = lambda i: i["op"] in (*pay, "FSYNC")
    n0 = len(eng.log)

    def release(name: str, want_held: int) -> bool:
        os.write(go[name][1], b"g")
        return srv.pump(5.0, lambda: len(eng.held) >= want_held) if want_held else (srv.pump(0.8) or True)

    ok = release("A", 1) and release("N0", 2)
    for n in ("B", "C", "D"):
        release(n, 0)
    ctx.diag(f"staged: held {[eng.infos[e.gid]['op'] for e in eng.held]}, deliveries {eng.log[n0:]}")
    holder = next((e for e in eng.held if eng.infos[e.gid]["op"] in pay), None)
    other = next((e for e in eng.held if eng.infos[e.gid]["op"] == "FSYNC"), None)
    if not (ok and holder and other and len(eng.log) - n0 == 2):
        ctx.result("staged", False, f"could not stage: held {len(eng.held)}, deliveries {eng.log[n0:]}")
        return
    ctx.result("staged", True, "A (GETATTR, the buffer) and N0 (FSYNC) held; B, C, D queued")
    eng.answer(other)  # B finds no buffer: this entry goes idle
    srv.pump(1.0)
    eng.answer(holder)  # B gets the kept buffer on the committing entry
    srv.pump(3.0, lambda: len(eng.held) >= 1)
    b = next(iter(eng.held), None)
    if b is not None:
        eng.answer(b)  # C (no payload) on this entry: the buffer is recycled
    srv.pump(3.0, lambda: any(eng.infos[e.gid]["op"] == "FSYNC" for e in eng.held))
    t_free = time.monotonic()
    got = lambda: sum(i["op"] in pay for i in eng.log[n0:]) >= 3  # noqa: E731 - A, B, D
    delivered = srv.pump(3.0, got)
    ctx.result("idle_entry_woken", delivered,
               f"D (payload) {'delivered' if delivered else 'not delivered'} within "
               f"{time.monotonic() - t_free:.2f} s while an entry and the buffer were both free "
               f"(PORT-NOTES D4); deliveries {[(i['op'], i['entry'], i['buf']) for i in eng.log[n0:]]}")
    eng.hold = None
    for e in list(eng.held):
        eng.answer(e)
    srv.pump(5.0, got)
    ctx.diag(f"D delivered {time.monotonic() - t_free:.2f} s after the buffer and an entry were free")
    for n in names:
        os.write(leave[n][1], b"l")
    srv.pump(min(20.0, ctx.left() - 5), lambda: all(c.done() for c in cs.values()))
    done = wait_all(list(cs.values()), 0.1)
    ctx.result("all_complete", done and all((c.result or {}).get("ok") for c in cs.values()),
               f"{[(c.name, c.result) for c in cs.values()]}")
    _waits(ctx, srv, list(cs.values()), t_free)


def null_payload(ctx: Ctx, args) -> None:  # noqa: ANN001
    """D3 crash probe: a bufring queue whose payload area starts at address 0. 10/14 should
    refuse it or fail the request (unpatched 7.2 gives -EFAULT); by reading it hits BUG_ON in
    fuse_copy_fill. Run it last, in a guest of its own."""
    srv = Served(ctx, "d3", transport="bufring", queue_depth=2, pool_bufs=1, files=_files(1), start=False)
    eng = srv.engine
    alloc = eng.alloc

    def alloc_at_zero() -> None:
        alloc()
        eng.payload_addr = [0] * eng.nr_queues
    eng.alloc = alloc_at_zero
    try:
        eng.start()
    except Exception as exc:  # noqa: BLE001 - a refusal is the right answer
        ctx.result("refused_or_failed_cleanly", True, f"REGISTER refused: {exc}")
        ctx.result("no_crash", True, "nothing registered")
        return
    eng.auto = True
    c = Client(ctx, "A", lambda: os.stat(srv.path("f0")).st_size, cpu=0)
    srv.pump(10.0, c.done)
    out = c.poll(0.0)
    ctx.result("refused_or_failed_cleanly", out is not None and not out.get("ok"),
               f"payload area at 0 accepted; stat: {out or 'no answer after 10 s, state ' + c.state()}")
    ctx.result("no_crash", out is not None, "the host's kernel log scan judges the BUG")
    srv.conn.abort()
