"""Generation D (posted kmbuf series, v4) edge scenarios.

What each case expects is the behaviour a reviewer would ask for; where v4 differs the
case fails and the harness's known-issues.yaml names the finding (PORT-NOTES of the
kmbuf-v4 fixture, points 3-8, and the series' own docs patch 25/25).
Kernels without IORING_REGISTER_KMBUF_RING skip every case with that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import time

from guest import mount as M
from guest.edge import sqe as S
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.cmds import sqe128_proof
from guest.edge.conn import Conn
from guest.edge.core import Ctx, ename
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.transports.base import SetupError
from guest.transports.kmbuf import BGID, D_CMD, kmbuf_supported, round_up
from guest.uring import abi
from guest.uring.ring import Ring, addr_of

E = errno
REG = P.URING_CMD_REGISTER
BUF_RING, ZC = P.URING_BUF_RING, P.URING_INIT_ZERO_COPY
DATA = {b"f": b"kmbuf " * 700, b"f0": b"zero " * 900, b"f1": b"one " * 1100}


def d_register(qid: int, flags: int = BUF_RING, depth: int = 4) -> bytes:
    """A generation D REGISTER request (init.flags, init.queue_depth)."""
    return D_CMD.pack(0, 0, qid, flags, depth, b"")


def skip_all_without_d(ctx: Ctx) -> bool:
    """True on a generation D kernel; otherwise every case is skipped with the reason."""
    why = kmbuf_supported()
    if why:
        for c in ctx.cases:
            ctx.result(c, None, reason=why)
    return why is None


def _d_ring(ctx: Ctx, conn: Conn, ring: Ring, kmbuf: bool = True, headers: bool = True,
            zc_depth: int = 0) -> Ring:
    """Give ring the kmbuf group and the headers fixed buffer (at index zc_depth, after
    zc_depth sparse slots); ring for convenience."""
    size = round_up(conn.init.max_payload_sz, mmap.PAGESIZE)
    if kmbuf:
        ring.register_kmbuf_ring(BGID, size, 4)
    if headers:
        hdr = mmap.mmap(-1, mmap.PAGESIZE * 2)
        ctx.closers.append(hdr.close)
        ring.register_buffers([(0, 0)] * zc_depth + [(addr_of(hdr), 4 * P.URING_HDR_SIZE)])
    return ring


def _d_conn(ctx: Ctx, tag: str, kmbuf: bool = True, headers: bool = True,
            zc_depth: int = 0) -> Conn:
    """A mounted, INIT-answered connection whose ring has the kmbuf group and the
    headers fixed buffer (at index zc_depth, after zc_depth sparse slots)."""
    conn = Conn(ctx, tag)
    conn.setup()
    _d_ring(ctx, conn, conn.get_ring(), kmbuf, headers, zc_depth)
    return conn


def _parked(res: int | None) -> str:
    return "parked" if res is None else ename(res)


def validation(ctx: Ctx, args) -> None:  # noqa: ANN001
    """The shared REGISTER validation over D. A refused REGISTER poisons its connection, so
    each bad REGISTER is the last command of a fresh connection; each is proved by a control,
    the same REGISTER with the one field fixed, that must park (else: not exercised).

    Checks (kmbuf v4 forward-ported to 7.2.13, fs/fuse/dev_uring.c; posted patch numbers):
    qid >= nr_queues :1548 (7.2's own); unknown init.flags bits: none (known issue
    kmbuf-v4-unknown-init-flags-accepted); no kmbuf group: io_uring_buf_ring_pin :309 (06/25,
    io_uring/kbuf.c: no buffer list -> -EINVAL); ZERO_COPY queue_depth 0 :328 (24/25, after
    pin :309, io_uring_is_kmbuf_ring :316 and CAP_SYS_ADMIN :323); ZERO_COPY without
    BUF_RING :380 (24/25); flags differing from the queue's :1560 (19/25); a second queue on a
    pinned group: -EALREADY from io_uring_buf_ring_pin (06/25, kbuf.c:322) via :309.

    Controls: `mixed` (fresh) REGISTER qid 0 BUF_RING parks: the control of bad_qid (qid 0),
    unknown_init_flag (no unknown bit), no_kmbuf_ring (the ring has the group); then, two
    queues: queue 1 on a second ring with its own group and headers parks (the control of
    second_queue_same_ring); then the same BUF_RING REGISTER again on queue 0 parks (the
    control of mixed_flags: init.flags BUF_RING, not 0) before the bad iovec one. `zcctl`
    (fresh, 4 sparse slots) BUF_RING|ZERO_COPY queue_depth 4 parks: the control of
    zc_depth_0 (depth 4) and zc_without_buf_ring (the BUF_RING bit; that case has depth 4)."""
    if not skip_all_without_d(ctx):
        return
    n = Conn(ctx, "probe").nr_queues
    conn = _d_conn(ctx, "mixed")
    base = conn.cmd(REG, d_register(0), timeout=1.0)
    ring_b, q1 = None, None
    if n > 1:
        ring_b = Ring(64, cq_entries=256)
        ctx.closers.append(ring_b.close)
        q1 = conn.cmd(REG, d_register(1), ring=_d_ring(ctx, conn, ring_b), timeout=1.0)
    again = conn.cmd(REG, d_register(0), buf_index=1, timeout=1.0)
    hdr, payload = mmap.mmap(-1, 4096), mmap.mmap(-1, conn.init.max_payload_sz)
    iov = (abi.Iovec * 2)(abi.Iovec(addr_of(hdr), P.URING_HDR_SIZE),
                          abi.Iovec(addr_of(payload), conn.init.max_payload_sz))
    for keep in (hdr, payload, iov):
        conn.get_ring().keep(keep)
    second = conn.cmd(REG, S.register(0), addr=ctypes.addressof(iov), length=2, timeout=2.0)
    ctx.result_control("mixed_flags_einval", base is None and second == -E.EINVAL,
                       f"first REGISTER (BUF_RING) {_parked(base)}, second (iovec, init.flags "
                       f"0) on the same queue {ename(second)} (expected -EINVAL, :1560)", again,
                       base is None and again is None,
                       "the second with init.flags BUF_RING, before it")
    ctl = "REGISTER qid 0 BUF_RING on a fresh connection whose ring has the group"
    conn = _d_conn(ctx, "qid")
    ctx.expect_res_control("bad_qid_einval", conn.cmd(REG, d_register(n), timeout=2.0),
                           -E.EINVAL, base, base is None, f"REGISTER qid={n} (nr_queues {n}):",
                           ctl)
    conn = _d_conn(ctx, "flag")
    got = conn.cmd(REG, d_register(0, BUF_RING | 1 << 2), timeout=2.0)
    ctx.result_control("unknown_init_flag_einval", got == -E.EINVAL,
                       f"REGISTER init.flags=BUF_RING|1<<2: {_parked(got)} (expected -EINVAL: "
                       "unknown bits must be refused to keep the ABI extensible)", base,
                       base is None, ctl)
    conn = _d_conn(ctx, "nokmbuf", kmbuf=False)
    got = conn.cmd(REG, d_register(0), timeout=2.0)
    ctx.result_control("no_kmbuf_ring_refused", got is not None and got < 0,
                       f"REGISTER BUF_RING on a ring without a kmbuf group: {_parked(got)} "
                       "(io_uring_buf_ring_pin :309)", base, base is None, ctl)
    zc = BUF_RING | ZC
    conn = _d_conn(ctx, "zcctl", zc_depth=4)
    zc_ctl = conn.cmd(REG, d_register(0, zc, 4), timeout=1.0)
    ctl = "REGISTER qid 0 BUF_RING|ZERO_COPY queue_depth 4 on a fresh connection"
    conn = _d_conn(ctx, "depth0", zc_depth=4)
    ctx.expect_res_control("zc_depth_0_einval", conn.cmd(REG, d_register(0, zc, 0), timeout=2.0),
                           -E.EINVAL, zc_ctl, zc_ctl is None,
                           "REGISTER BUF_RING|ZERO_COPY queue_depth=0 (:328):", ctl)
    conn = _d_conn(ctx, "zconly", zc_depth=4)
    ctx.expect_res_control("zc_without_buf_ring_einval",
                           conn.cmd(REG, d_register(0, ZC, 4), timeout=2.0), -E.EINVAL, zc_ctl,
                           zc_ctl is None,
                           "REGISTER ZERO_COPY queue_depth 4 without BUF_RING (:380):", ctl)
    if n < 2:
        ctx.result("second_queue_same_ring_ealready", None, reason="needs two queues")
    else:
        conn = _d_conn(ctx, "samering")
        first = conn.cmd(REG, d_register(0), timeout=1.0)
        second = conn.cmd(REG, d_register(1), buf_index=1, timeout=2.0)
        ctx.result_control("second_queue_same_ring_ealready",
                           first is None and second == -E.EALREADY,
                           f"queue 0 {_parked(first)}, queue 1 on the same ring {ename(second)} "
                           "(expected -EALREADY: group 0 is pinned by queue 0; kbuf.c:322)", q1,
                           base is None and q1 is None,
                           "queue 1 on a second ring with its own group, after queue 0")
    conn = _d_conn(ctx, "sqe64")
    sqe128_proof(ctx, "no_sqe128_einval", conn)


def small_buffer(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A kmbuf ring whose buffers are smaller than max_payload_sz must be refused."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "ksb", transport="kmbuf", files=DATA, buf_size=mmap.PAGESIZE, start=False)
    try:
        srv.engine.start()
        refused = None
    except SetupError as exc:
        refused = exc
    ctx.result("small_buffer_refused", refused is not None,
               f"{mmap.PAGESIZE}-byte buffers, max_payload_sz {srv.init.max_payload_sz}: "
               + (str(refused) if refused else "every REGISTER accepted"))
    if refused:
        ctx.result("fitting_request_served", None, reason="refused: nothing to serve")
        ctx.result("oversize_payload_bounded", None, reason="refused: nothing to serve")
        return
    srv.engine.auto = True
    a = Client(ctx, "stat", lambda: os.stat(srv.path("f")).st_size, cpu=0)
    srv.pump(15.0, a.done)
    out = a.poll(0.0)
    ctx.result("fitting_request_served", bool(out and out.get("ok")), f"stat: {out}")
    if not args.provoke:
        ctx.result("oversize_payload_bounded", None, reason="would spin in fuse_copy_one "
                   "without progress (a soft lockup; rerun with --provoke on a throwaway guest)")
        return
    w = Client(ctx, "write16k", lambda: pwrite_file(srv.path("f"), b"w" * 4 * mmap.PAGESIZE), cpu=0)
    srv.pump(15.0, w.done)
    out = w.poll(0.0)
    spin = ""
    if out is None:  # kernel CPU time still growing: it spins, it does not sleep
        t0 = _stime(w.pid)
        time.sleep(1.0)
        spin = f", kernel CPU time {_stime(w.pid) - t0:.2f}s in the last 1 s"
    ctx.result("oversize_payload_bounded", out is not None,
               f"16 KiB write into {mmap.PAGESIZE}-byte buffers: "
               f"{out or 'no answer after 15 s, client state ' + w.state() + spin}")


def _stime(pid: int) -> float:
    """Seconds of kernel CPU time of pid (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def unregister_busy(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Unregistering the kmbuf group a live queue pinned is refused; the queue still serves."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "kub", transport="kmbuf", files=DATA)
    srv.engine.auto = True
    try:
        srv.engine.ring_of(0).unregister_kmbuf_ring(BGID)
        got = 0
    except OSError as exc:
        got = -exc.errno
    ctx.result("unregister_ebusy", got == -E.EBUSY, f"IORING_UNREGISTER_KMBUF_RING: {ename(got)}")
    a = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(15.0, a.done)
    out = a.poll(0.0)
    ctx.result("queue_still_serves", bool(out and out.get("ok")
                                           and out["value"].encode() == DATA[b"f"]),
               f"read after the unregister attempt: {str(out)[:120]}")


def ring_closed_held(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Close every ring (dropping the pinned kmbuf groups) while requests sit in entries
    with buffers; then abort and umount: clients return, nothing touches the freed rings."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "krc", transport="kmbuf", files=DATA)
    eng = srv.engine
    eng.hold = lambda i: i["op"] in ("LOOKUP", "GETATTR", "READ", "OPEN")
    clients = [Client(ctx, f"c{i}", (lambda p: lambda: read_file(p))(srv.path(f"f{i}")),
                      cpu=i % srv.conn.nr_queues) for i in range(2)]
    held = srv.wait_held(2, 15.0)
    bufs = [eng.infos[e.gid].get("buf") for e in eng.held]
    ctx.result("requests_held_with_buffers", held and all(b is not None for b in bufs),
               f"held {len(eng.held)} requests, buffers {bufs}")
    srv.close_rings()
    time.sleep(1.0)
    late = Client(ctx, "late", lambda: os.stat(srv.path("f")).st_size, cpu=0)
    ctx.result("abort_written", srv.conn.abort(), "fusectl abort after the rings closed")
    ok = wait_all([*clients, late], 15.0)
    ctx.result("clients_return", ok, "; ".join(f"{c.name}: {c.poll(0.0) or 'state ' + c.state()}"
                                               for c in (*clients, late)))
    umount_lazy(ctx, srv)


def pwrite_file(path: str, data: bytes) -> int:
    """Write data at offset 0 of path; bytes written. An error of the pwrite itself is the one
    raised: the FLUSH that close() sends on a dead connection fails too (ENOTCONN), and must not
    replace the WRITE's own error (ECONNABORTED after an abort)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        n = os.pwrite(fd, data, 0)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    os.close(fd)
    return n


def umount_lazy(ctx: Ctx, srv: Served, case: str = "umount_after_abort", label: str = "") -> None:
    """Case `case`: umount -l of the (aborted) mount succeeds."""
    try:
        M.umount(srv.mnt, M.MNT_DETACH)
        um = "ok"
    except OSError as exc:
        um = exc.strerror
    ctx.result(case, um == "ok", f"{label}umount -l: {um}")


def bad_header_index(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Entries of queue 0 registered with a sqe->buf_index past the headers buffer: a request
    dispatched there cannot get its headers and must fail at once, not hang until teardown."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "kbh", transport="kmbuf", files=DATA, start=False)
    eng = srv.engine
    base_args = eng.fixed_args
    eng.fixed_args = lambda e: (0, e.idx + 64) if e.qid == 0 else base_args(e)
    try:
        eng.start()
        started = None
    except SetupError as exc:
        started = exc
    ctx.diag(f"REGISTER with buf_index idx+64 on queue 0: {started or 'accepted'}")
    if started:
        ctx.result("client_not_stranded", True, "refused at REGISTER: nothing can strand")
        ctx.result("abort_releases_client", None, reason="nothing to release")
        return
    eng.auto = True
    a = Client(ctx, "stat", lambda: os.stat(srv.path("f")).st_size, cpu=0)
    srv.pump(10.0, a.done)
    out = a.poll(0.0)
    ctx.result("client_not_stranded", out is not None,
               f"stat on queue 0: {out or 'no answer after 10 s, state ' + a.state()}; "
               f"deliveries to the server {len(eng.log)}")
    ctx.result("abort_releases_client", srv.conn.abort() and wait_all([a], 10.0),
               f"after fusectl abort: {a.poll(0.0) or 'state ' + a.state()}")


def commit_async(ctx: Ctx, args) -> None:  # noqa: ANN001
    """COMMIT_AND_FETCH issued from io-wq (IOSQE_ASYNC): buffer recycling then runs with
    IO_URING_F_UNLOCKED under the queue spinlock; clients must complete, and the host scans
    the kernel log (the debug profile's lockdep / might_sleep checks name it)."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "kca", transport="kmbuf", files=DATA, pool_bufs=2)
    srv.engine.commit_sqe_flags = abi.IOSQE_ASYNC
    srv.engine.auto = True
    def stat_and_read() -> str:
        os.stat(srv.path("f"))
        return read_file(srv.path("f"))

    clients = [Client(ctx, f"c{i}", stat_and_read, cpu=i % srv.conn.nr_queues) for i in range(6)]
    srv.pump(min(60.0, ctx.left() - 5), lambda: all(c.done() for c in clients))
    bad = [f"{c.name}: {c.poll(0.0) or 'state ' + c.state()}" for c in clients
           if not (c.poll(0.0) and c.poll(0.0).get("ok") and c.poll(0.0)["value"].encode() == DATA[b"f"])]
    ctx.result("clients_complete", not bad, "; ".join(bad) or f"{len(srv.engine.answered)} async commits")
    k = srv.counters.snapshot()["kmbuf"]
    ctx.result("buffers_recycled", k["selected"] >= 1 and k["missing"] == 0, f"kmbuf {k}")
