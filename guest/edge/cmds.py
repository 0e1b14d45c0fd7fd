"""Command-level error scenarios (catalog G1-G3, G7, Q1-Q4, B1-B5, R1/P1, R5, R7).

Each expected errno is the one the 7.3.4 code returns (fuse-uring-abi.md 7.2).
None of these connections ever becomes ready; cleanup aborts them.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

from guest.edge import sqe as S
from guest.edge.clients import Client
from guest.edge.conn import Conn, SmallRing
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.uring import abi
from guest.uring.ring import addr_of

E = errno
AQ, AB, REG = P.URING_CMD_ADD_QUEUE, P.URING_CMD_ADD_BUFPOOL, P.URING_CMD_REGISTER


def _need_c(ctx: Ctx, conn: Conn, cases: list[str] | None = None) -> bool:
    """Skip cases (default: every case not reported yet) that need generation C
    (ADD_QUEUE/ADD_BUFPOOL) on older kernels."""
    if conn.bufpool:
        return True
    for c in cases if cases is not None else [c for c in ctx.cases if c not in ctx.done]:
        ctx.result(c, None, reason="kernel lacks FUSE_HAS_IO_URING_BUFPOOL (7.3 ABI)")
    return False


def _c_conn(ctx: Ctx, tag: str) -> Conn | None:
    """A mounted, INIT-answered connection for a scenario that is all generation C, or None
    (every case skipped) on older kernels."""
    conn = Conn(ctx, tag)
    conn.setup()
    return conn if _need_c(ctx, conn) else None


def _pool(conn: Conn, nbufs: int = 2) -> tuple[mmap.mmap, int]:
    mm = mmap.mmap(-1, nbufs * conn.init.max_payload_sz)
    mm[0:1] = b"\0"
    conn.ctx.closers.append(mm.close)
    return mm, addr_of(mm)


def no_sqe128(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G1: a ring without IORING_SETUP_SQE128 -> -EINVAL; the connection is unharmed."""
    conn = Conn(ctx, "g1")
    conn.setup()
    small = SmallRing()
    ctx.closers.append(small.close)
    slot = S.uring_cmd_sqe(conn.fd, AQ, 1, S.add_queue(0), size=S.SMALL_SQE_SIZE)
    ctx.expect_res("no_sqe128_einval", small.submit_one(slot, 3.0), -E.EINVAL, "ADD_QUEUE")
    if _need_c(ctx, conn, ["sqe128_ring_still_works"]):
        ctx.expect_res("sqe128_ring_still_works", conn.cmd(AQ, S.add_queue(0)), 0,
                       "ADD_QUEUE on an SQE128 ring afterwards:")


def before_mount(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G2: /dev/fuse opened but not mounted -> -EPERM."""
    conn = Conn(ctx, "g2")
    ctx.expect_res("before_mount_eperm", conn.cmd(AQ, S.add_queue(0)), -E.EPERM, "ADD_QUEUE")


def before_init(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G3: mounted, INIT not answered yet -> -EAGAIN; after the reply it works."""
    conn = Conn(ctx, "g3")
    conn.mount()
    h, arg0 = conn.read_init()
    ctx.expect_res("before_init_eagain", conn.cmd(AQ, S.add_queue(0)), -E.EAGAIN, "ADD_QUEUE")
    conn.reply_init(h, arg0)
    if _need_c(ctx, conn, ["after_init_ok"]):
        ctx.expect_res("after_init_ok", conn.cmd(AQ, S.add_queue(0)), 0, "ADD_QUEUE after INIT:")


def unknown_cmd(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G7: cmd_op 0, 5, 0x7f -> -EINVAL, and no poison."""
    conn = Conn(ctx, "g7")
    conn.setup()
    for op in S.UNKNOWN_CMD_OPS:
        ctx.expect_res(f"cmd_op_{op}_einval", conn.cmd(op, S.add_queue(0)), -E.EINVAL,
                       f"cmd_op {op}:")
    if _need_c(ctx, conn, ["no_poison"]):
        ctx.expect_res("no_poison", conn.cmd(AQ, S.add_queue(0)), 0, "ADD_QUEUE afterwards:")


def add_queue_errors(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Q1 qid >= nr_queues, Q2 unknown flag -> -EINVAL; Q4 existing queue -> -EEXIST."""
    conn = _c_conn(ctx, "q")
    if conn is None:
        return
    n = conn.nr_queues
    ctx.diag(f"nr_queues {n}")
    ctx.expect_res("qid_out_of_range_einval", conn.cmd(AQ, S.add_queue(n)), -E.EINVAL,
                   f"ADD_QUEUE qid={n}:")
    ctx.expect_res("unknown_flag_einval", conn.cmd(AQ, S.add_queue(0, flags=2)), -E.EINVAL,
                   "ADD_QUEUE flags=2:")
    ctx.expect_res("first_ok", conn.cmd(AQ, S.add_queue(0)), 0, "ADD_QUEUE qid=0:")
    ctx.expect_res("twice_eexist", conn.cmd(AQ, S.add_queue(0)), -E.EEXIST,
                   "second ADD_QUEUE qid=0:")
    # Q4 after REGISTER auto-created the queue (a valid per-entry REGISTER parks)
    q = n - 1
    if q == 0:
        ctx.result("after_register_eexist", None, reason="needs two queues")
        return
    hdr = mmap.mmap(-1, mmap.PAGESIZE)
    pay = mmap.mmap(-1, conn.init.max_payload_sz)
    iov = (abi.Iovec * 2)(abi.Iovec(addr_of(hdr), P.URING_HDR_SIZE),
                          abi.Iovec(addr_of(pay), conn.init.max_payload_sz))
    conn.get_ring().keep((hdr, pay, iov))
    res = conn.cmd(REG, S.register(q), ctypes.addressof(iov), 2, timeout=1.0)
    ctx.diag(f"REGISTER qid={q} (per-entry): {'parked' if res is None else res}")
    ctx.expect_res("after_register_eexist", conn.cmd(AQ, S.add_queue(q)), -E.EEXIST,
                   f"ADD_QUEUE qid={q} after REGISTER:")



def add_queue_zc_unpriv(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Q3: ADD_QUEUE FUSE_URING_ZERO_COPY without CAP_SYS_ADMIN -> -EPERM."""
    conn = _c_conn(ctx, "q3")
    if conn is None:
        return

    def unprivileged() -> int | None:
        conn.ring = None  # the child builds its own ring after dropping root
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        return conn.cmd(AQ, S.add_queue(0, flags=P.URING_ZERO_COPY))

    c = Client(ctx, "unpriv", unprivileged, cpu=None)
    out = c.poll(10.0) or {"ok": False, "error": "no answer in 10s"}
    res = out.get("value") if out.get("ok") else None
    if not out.get("ok"):
        ctx.diag(f"unprivileged child failed: {out}")
    ctx.expect_res("zc_unprivileged_eperm", res, -E.EPERM, "ADD_QUEUE ZERO_COPY as uid 65534:")
    ctx.expect_res("zc_root_ok", conn.cmd(AQ, S.add_queue(0, flags=P.URING_ZERO_COPY)), 0,
                   "the same as root:")


def add_bufpool_flags(ctx: Ctx, args) -> None:  # noqa: ANN001
    """B1: ADD_BUFPOOL with flags=1 (or qid >= nr_queues) -> -EINVAL, nothing left behind."""
    conn = _c_conn(ctx, "b1")
    if conn is None:
        return
    _, base = _pool(conn)
    length = 2 * conn.init.max_payload_sz
    ctx.expect_res("add_queue_ok", conn.cmd(AQ, S.add_queue(0)), 0, "ADD_QUEUE qid=0:")
    ctx.expect_res("flags_einval", conn.cmd(AB, S.add_bufpool(0, base, length, flags=1)),
                   -E.EINVAL, "ADD_BUFPOOL flags=1:")
    ctx.expect_res("qid_out_of_range_einval",
                   conn.cmd(AB, S.add_bufpool(conn.nr_queues, base, length)), -E.EINVAL,
                   f"ADD_BUFPOOL qid={conn.nr_queues}:")
    ctx.expect_res("valid_after_ok", conn.cmd(AB, S.add_bufpool(0, base, length)), 0,
                   "a correct ADD_BUFPOOL afterwards (nothing left behind):")



def add_bufpool_errors(ctx: Ctx, args) -> None:  # noqa: ANN001
    """B2 reserved != 0, B3 no queue, B4 pool too small, B5 mode already set -> -EINVAL."""
    conn = _c_conn(ctx, "b")
    if conn is None:
        return
    _, base = _pool(conn)
    mps = conn.init.max_payload_sz
    ctx.diag(f"max_payload_sz {mps}, nr_queues {conn.nr_queues}")
    ctx.expect_res("no_queue_einval", conn.cmd(AB, S.add_bufpool(0, base, mps)), -E.EINVAL,
                   "B3 ADD_BUFPOOL before ADD_QUEUE:")
    conn.cmd(AQ, S.add_queue(0))
    ctx.expect_res("reserved_einval", conn.cmd(AB, S.add_bufpool(0, base, mps, reserved=1)),
                   -E.EINVAL, "B2 reserved=1:")
    ctx.expect_res("too_small_einval", conn.cmd(AB, S.add_bufpool(0, base, mps - 1)),
                   -E.EINVAL, f"B4 len={mps - 1}:")
    ctx.expect_res("first_ok", conn.cmd(AB, S.add_bufpool(0, base, mps)), 0,
                   "valid ADD_BUFPOOL:")
    ctx.expect_res("second_einval", conn.cmd(AB, S.add_bufpool(0, base, mps)), -E.EINVAL,
                   "B5 second ADD_BUFPOOL:")



def register_bad_qid(ctx: Ctx, args) -> None:  # noqa: ANN001
    """R1 + P1: REGISTER qid >= nr_queues -> -EINVAL, io-uring off, /dev/fuse still serves."""
    srv = Served(ctx, "r1", transport=args.transport, start=False,
                 files={b"f": b"fallback data\n"})
    n = srv.conn.nr_queues
    ctx.expect_res("register_bad_qid_einval", srv.bad_register(n), -E.EINVAL,
                   f"REGISTER qid={n}:")
    ctx.expect_res("later_register_eopnotsupp", srv.bad_register(0), -E.EOPNOTSUPP,
                   "REGISTER qid=0 afterwards:")
    ctx.expect_res("later_add_queue_eopnotsupp", srv.raw(AQ, S.add_queue(0)), -E.EOPNOTSUPP,
                   "ADD_QUEUE afterwards:")

    def client() -> str:
        p = srv.path("f")
        with open(p, "ab") as f:
            f.write(b"more\n")
        with open(p, "rb") as f:
            return f.read().decode()

    c = Client(ctx, "fallback", client)
    out = c.poll(min(20.0, ctx.left()))
    ctx.result("file_ops_over_devfuse", bool(out and out.get("ok")
                                             and out["value"] == "fallback data\nmore\n"),
               f"client: {out}")
    paths = srv.counters.snapshot()["paths"]
    ctx.result("no_ring_traffic", paths.get("io_uring", 0) == 0 and paths.get("devfuse", 0) > 1,
               f"paths {paths}")


def register_bad_fields(ctx: Ctx, args) -> None:  # noqa: ANN001
    """R5 zc index on a plain queue, R7 payload iovec on a bufpool queue -> -EINVAL."""
    for case, bufpool in (("zc_index_plain_queue", False), ("payload_iov_bufpool_queue", True)):
        conn = Conn(ctx, case[:6])
        conn.setup()
        if not _need_c(ctx, conn, [f"{case}_einval", f"{case}_poisons"]):
            continue
        mps = conn.init.max_payload_sz
        conn.cmd(AQ, S.add_queue(0))
        hdr = mmap.mmap(-1, mmap.PAGESIZE)
        pay = mmap.mmap(-1, mps)
        if bufpool:
            _, base = _pool(conn)
            ctx.diag(f"{case}: ADD_BUFPOOL {conn.cmd(AB, S.add_bufpool(0, base, mps))}")
        iov = (abi.Iovec * 2)(abi.Iovec(addr_of(hdr), P.URING_HDR_SIZE),
                              abi.Iovec(addr_of(pay), mps))
        conn.get_ring().keep((hdr, pay, iov))
        req = S.register(0, zc_index=0 if bufpool else 1)
        ctx.expect_res(f"{case}_einval", conn.cmd(REG, req, ctypes.addressof(iov), 2),
                       -E.EINVAL, "REGISTER:")
        ctx.expect_res(f"{case}_poisons", conn.cmd(AQ, S.add_queue(conn.nr_queues - 1)),
                       -E.EOPNOTSUPP, "ADD_QUEUE afterwards (P1 poison):")
