"""Generation D (posted kmbuf series, v4) edge scenarios.

What each case expects is the behaviour a reviewer would ask for; where v4 differs the
case fails and the harness's known-issues.yaml names the finding (PORT-NOTES of the
kmbuf-v4 fixture, points 3-8, and the series' own docs patch 25/25).
Kernels without IORING_REGISTER_KMBUF_RING skip every case with that reason.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
import time

from guest import mount as M
from guest.edge import sqe as S
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.conn import Conn, SmallRing
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
NOBODY = 65534


def d_register(qid: int, flags: int = BUF_RING, depth: int = 4) -> bytes:
    """A generation D REGISTER request (init.flags, init.queue_depth)."""
    return D_CMD.pack(0, 0, qid, flags, depth, b"")


def _skip_all_without_d(ctx: Ctx) -> bool:
    why = kmbuf_supported()
    if why:
        for c in ctx.cases:
            ctx.result(c, None, reason=why)
    return why is None


def _d_conn(ctx: Ctx, tag: str, kmbuf: bool = True, headers: bool = True,
            zc_depth: int = 0) -> Conn:
    """A mounted, INIT-answered connection whose ring has the kmbuf group and the
    headers fixed buffer (at index zc_depth, after zc_depth sparse slots)."""
    conn = Conn(ctx, tag)
    conn.setup()
    ring = conn.get_ring()
    size = round_up(conn.init.max_payload_sz, mmap.PAGESIZE)
    if kmbuf:
        ring.register_kmbuf_ring(BGID, size, 4)
    if headers:
        hdr = mmap.mmap(-1, mmap.PAGESIZE * 2)
        ctx.closers.append(hdr.close)
        ring.register_buffers([(0, 0)] * zc_depth + [(addr_of(hdr), 4 * P.URING_HDR_SIZE)])
    return conn


def validation(ctx: Ctx, args) -> None:  # noqa: ANN001
    """The shared REGISTER validation over D, one fresh connection per case."""
    if not _skip_all_without_d(ctx):
        return
    n = Conn(ctx, "probe").nr_queues
    conn = _d_conn(ctx, "qid")
    ctx.expect_res("bad_qid_einval", conn.cmd(REG, d_register(n), timeout=2.0), -E.EINVAL,
                   f"REGISTER qid={n} (nr_queues {n}):")
    conn = _d_conn(ctx, "flag")
    got = conn.cmd(REG, d_register(0, BUF_RING | 1 << 2), timeout=2.0)
    ctx.result("unknown_init_flag_einval", got == -E.EINVAL,
               f"REGISTER init.flags=BUF_RING|1<<2: {ename(got) if got is not None else 'accepted (parked)'}"
               " (expected -EINVAL: unknown bits must be refused to keep the ABI extensible)")
    conn = _d_conn(ctx, "depth0", zc_depth=4)
    ctx.expect_res("zc_depth_0_einval", conn.cmd(REG, d_register(0, BUF_RING | ZC, 0), timeout=2.0),
                   -E.EINVAL, "REGISTER BUF_RING|ZERO_COPY queue_depth=0:")
    conn = _d_conn(ctx, "zconly")
    ctx.expect_res("zc_without_buf_ring_einval", conn.cmd(REG, d_register(0, ZC), timeout=2.0),
                   -E.EINVAL, "REGISTER ZERO_COPY without BUF_RING:")
    conn = _d_conn(ctx, "nokmbuf", kmbuf=False)
    got = conn.cmd(REG, d_register(0), timeout=2.0)
    ctx.result("no_kmbuf_ring_refused", got is not None and got < 0,
               f"REGISTER BUF_RING on a ring without a kmbuf group: {ename(got)}")
    conn = _d_conn(ctx, "mixed")
    first = conn.cmd(REG, d_register(0), timeout=1.0)
    hdr, payload = mmap.mmap(-1, 4096), mmap.mmap(-1, conn.init.max_payload_sz)
    iov = (abi.Iovec * 2)(abi.Iovec(addr_of(hdr), P.URING_HDR_SIZE),
                          abi.Iovec(addr_of(payload), conn.init.max_payload_sz))
    for keep in (hdr, payload, iov):
        conn.get_ring().keep(keep)
    second = conn.cmd(REG, S.register(0), addr=ctypes.addressof(iov), length=2, timeout=2.0)
    ctx.result("mixed_flags_einval", first is None and second == -E.EINVAL,
               f"first REGISTER (BUF_RING) {ename(first) if first is not None else 'parked'}, "
               f"second (iovec) on the same queue {ename(second)} (expected -EINVAL)")
    conn = _d_conn(ctx, "samering")
    first = conn.cmd(REG, d_register(0), timeout=1.0)
    second = conn.cmd(REG, d_register(1), buf_index=1, timeout=2.0) if n > 1 else -E.EALREADY
    ctx.result("second_queue_same_ring_ealready", first is None and second == -E.EALREADY,
               f"queue 0 {ename(first) if first is not None else 'parked'}, queue 1 on the same "
               f"ring {ename(second)} (expected -EALREADY: group 0 is pinned by queue 0)")
    conn = _d_conn(ctx, "sqe64")
    small = SmallRing()
    ctx.closers.append(small.close)
    slot = S.uring_cmd_sqe(conn.fd, REG, 1, d_register(0), size=S.SMALL_SQE_SIZE)
    ctx.expect_res("no_sqe128_einval", small.submit_one(slot, 3.0), -E.EINVAL,
                   "REGISTER on a ring without SQE128:")


def small_buffer(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A kmbuf ring whose buffers are smaller than max_payload_sz must be refused."""
    if not _skip_all_without_d(ctx):
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
    w = Client(ctx, "write16k", lambda: _pwrite(srv.path("f"), b"w" * 4 * mmap.PAGESIZE), cpu=0)
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
    if not _skip_all_without_d(ctx):
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
    if not _skip_all_without_d(ctx):
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
    _umount_lazy(ctx, srv)


def _umount_lazy(ctx: Ctx, srv: Served) -> None:
    """Case umount_after_abort: umount -l of the aborted mount succeeds."""
    try:
        M.umount(srv.mnt, M.MNT_DETACH)
        um = "ok"
    except OSError as exc:
        um = exc.strerror
    ctx.result("umount_after_abort", um == "ok", f"umount -l: {um}")


def bad_header_index(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Entries of queue 0 registered with a sqe->buf_index past the headers buffer: a request
    dispatched there cannot get its headers and must fail at once, not hang until teardown."""
    if not _skip_all_without_d(ctx):
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


def zc_teardown(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Abort with a zero-copy WRITE in flight: the request ends, and the entry's buffer slot
    must no longer reach the client's pages (the series leaves them registered on teardown)."""
    if not _skip_all_without_d(ctx):
        return
    srv = Served(ctx, "kzt", transport="kmbuf-zero-copy", files=DATA)
    eng = srv.engine
    eng.hold = lambda i: i["op"] == "WRITE"
    eng.auto = True
    secret = b"zero-copy page " * 200
    w = Client(ctx, "writer", lambda: _pwrite(srv.path("f"), secret), cpu=0)
    held = srv.pump(15.0, lambda: bool(eng.held))
    e = eng.held[0] if held else None
    ctx.result("write_held_in_slot", e is not None,
               f"WRITE held on entry {e.gid if e else '-'} (slot {e.slot if e else '-'})")
    if e is None:
        return
    ring = eng.ring_of(e.qid)
    probe = os.memfd_create("fh-kzt", os.MFD_CLOEXEC)
    ctx.closers.append(lambda: os.close(probe))

    def slot_to_memfd(tag: int) -> int | None:
        ring.prep_rw(abi.Op.WRITE_FIXED, probe, 0, len(secret), 0, tag, buf_index=e.slot)
        got: list[int] = []
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not got:
            ring.submit()
            for ud, res, cflags in ring.reap():
                if ud == tag:
                    got.append(res)
                else:
                    eng.on_cqe(ud, res, cflags)
            time.sleep(0.01)
        return got[0] if got else None

    before = slot_to_memfd(0x7F01)
    ctx.diag(f"slot read while the WRITE is held: {ename(before)} "
             f"(same bytes as the client's: {os.pread(probe, len(secret), 0) == secret})")
    ctx.result("abort_written", srv.conn.abort(), "fusectl abort with the WRITE held")
    ok = wait_all([w], 10.0)
    ctx.result("clients_return", ok, f"writer: {w.poll(0.0) or 'state ' + w.state()}")
    os.pwrite(probe, bytes(len(secret)), 0)
    after = slot_to_memfd(0x7F02)
    leak = after is not None and after > 0
    ctx.result("slot_empty_after_abort", after is not None and after < 0,
               f"WRITE_FIXED from slot {e.slot} after the request ended: {ename(after)}"
               + (f" ({'the client pages' if os.pread(probe, len(secret), 0) == secret else 'stale bytes'}"
                  " are still reachable)" if leak else ""))
    _umount_lazy(ctx, srv)
    # The same teardown path with a zero-copy READ held, ended by umount -l + abort (no
    # probe of that slot: it maps the reader's pages for writing).
    srv2 = Served(ctx, "kzr", transport="kmbuf-zero-copy", files=DATA)
    srv2.engine.hold = lambda i: i["op"] == "READ"
    srv2.engine.auto = True
    r = Client(ctx, "reader", lambda: read_file(srv2.path("f")), cpu=0)
    held = srv2.pump(15.0, lambda: bool(srv2.engine.held))
    try:
        M.umount(srv2.mnt, M.MNT_DETACH)
    except OSError as exc:
        ctx.diag(f"umount -l with a zero-copy READ held: {exc.strerror}")
    aborted = srv2.conn.abort()
    ok = held and aborted and wait_all([r], 10.0)
    ctx.result("read_held_umount_abort", ok, f"READ held {held}, abort {aborted}, "
               f"reader: {r.poll(0.0) or 'state ' + r.state()}")


def _pwrite(path: str, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def commit_async(ctx: Ctx, args) -> None:  # noqa: ANN001
    """COMMIT_AND_FETCH issued from io-wq (IOSQE_ASYNC): buffer recycling then runs with
    IO_URING_F_UNLOCKED under the queue spinlock; clients must complete, and the host scans
    the kernel log (the debug profile's lockdep / might_sleep checks name it)."""
    if not _skip_all_without_d(ctx):
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


def _memlock_child(cycles: int, how: str, w: int) -> None:
    """In a child without CAP_IPC_LOCK: cycles of a 4 x 128 KiB kmbuf ring under a 1 MiB
    RLIMIT_MEMLOCK, then one 1 MiB ring that fits only if every cycle was uncharged."""
    out = []
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (1 << 20, 1 << 20))
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        status, waited = _vm_status(), 0.0
        for i in range(cycles):
            r = Ring(4)
            got, secs = _register_patiently(r, 128 << 10)
            waited += secs
            if got != "ok":
                out.append(f"cycle {i + 1} of {cycles}: {got} after {secs:.1f}s;")
                break
            if how == "unregister":
                r.unregister_kmbuf_ring(BGID)
            r.close()
        else:
            r = Ring(4)
            final, secs = _register_patiently(r, 256 << 10)
            out.append(f"final={final} after {secs:.2f}s (waits in the cycles {waited:.1f}s)")
            r.close()
        out.append(f"before={status} after={_vm_status()}")
    except OSError as exc:
        out.append(f"error={exc}")
    os.write(w, " ".join(out).encode())
    os._exit(0)


def _register_patiently(r: Ring, buf_size: int) -> tuple[str, float]:
    """A 4-buffer kmbuf ring; ENOMEM is retried for 10 s, because a closed ring's exit (and
    its uncharge) runs later in a kernel worker. ("ok" or the errno name, seconds waited)."""
    t0 = time.monotonic()
    while True:
        try:
            r.register_kmbuf_ring(BGID, buf_size, 4)
            return "ok", time.monotonic() - t0
        except OSError as exc:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            if exc.errno != errno.ENOMEM or time.monotonic() - t0 > 10.0:
                return name, time.monotonic() - t0
            time.sleep(0.25)


def _vm_status() -> str:
    with open("/proc/self/status") as f:
        return ",".join(ln.split()[0] + ln.split()[1] for ln in f if ln.startswith(("VmLck", "VmPin")))


def memlock(ctx: Ctx, args) -> None:  # noqa: ANN001
    """kmbuf buffers are charged to RLIMIT_MEMLOCK and uncharged on unregister and ring exit."""
    if not _skip_all_without_d(ctx):
        return
    for how, case in (("unregister", "unregister_cycles_uncharged"), ("close", "close_cycles_uncharged")):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _memlock_child(max(8, args.iterations), how, w)
        os.close(w)
        ctx.pids.append(pid)
        got = b""
        end = time.monotonic() + min(30.0, ctx.left())
        while time.monotonic() < end:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            got += chunk
        os.close(r)
        text = got.decode()
        ctx.result(case, "final=ok" in text, f"{how} x{max(8, args.iterations)} under a 1 MiB "
                   f"RLIMIT_MEMLOCK, then a 1 MiB ring: {text or 'no answer'}")
