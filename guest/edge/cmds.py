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
from guest.edge.core import Ctx, ename
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.uring import abi
from guest.uring.ring import addr_of

E = errno
AQ, AB, REG = P.URING_CMD_ADD_QUEUE, P.URING_CMD_ADD_BUFPOOL, P.URING_CMD_REGISTER
CF = P.URING_CMD_COMMIT_AND_FETCH


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


def sqe128_proof(ctx: Ctx, case: str, conn: Conn) -> None:
    """A COMMIT_AND_FETCH qid 0 on a ring without SQE128 -> -EINVAL (7.3.4 dev_uring.c:1658,
    the first check of fuse_uring_cmd; 7.2.13:1230). Control: the same command on the SQE128
    ring gets past it and every generation's dispatch to -ENOTCONN (no queue 0 yet,
    fuse_uring_commit_fetch 7.3.4:1256). COMMIT_AND_FETCH, not ADD_QUEUE or REGISTER: it is
    known to every generation (ADD_QUEUE is an unknown cmd_op, -EINVAL too, before 7.3) and its
    errors do not poison the connection."""
    control = conn.cmd(CF, S.commit(0, 0))
    small = SmallRing()
    ctx.closers.append(small.close)
    slot = S.uring_cmd_sqe(conn.fd, CF, 1, S.commit(0, 0), size=S.SMALL_SQE_SIZE)
    ctx.expect_res_control(case, small.submit_one(slot, 3.0), -E.EINVAL, control,
                           control == -E.ENOTCONN, "COMMIT_AND_FETCH qid=0 on a 64-byte-SQE ring:",
                           "the same on the SQE128 ring")


def no_sqe128(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G1: a ring without IORING_SETUP_SQE128 -> -EINVAL (sqe128_proof); the connection is
    unharmed."""
    conn = Conn(ctx, "g1")
    conn.setup()
    sqe128_proof(ctx, "no_sqe128_einval", conn)
    if _need_c(ctx, conn, ["sqe128_ring_still_works"]):
        ctx.expect_res("sqe128_ring_still_works", conn.cmd(AQ, S.add_queue(0)), 0,
                       "ADD_QUEUE on an SQE128 ring afterwards:")


def before_mount(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G2: /dev/fuse opened but not mounted -> -EPERM (fuse_get_dev, 7.3.4 dev.c:1700, called
    from dev_uring.c:1661). Control: the same ADD_QUEUE once mounted gets past it to -EAGAIN
    (INIT not answered, dev_uring.c:1674)."""
    conn = Conn(ctx, "g2")
    res = conn.cmd(AQ, S.add_queue(0))
    conn.mount()
    control = conn.cmd(AQ, S.add_queue(0))
    ctx.expect_res_control("before_mount_eperm", res, -E.EPERM, control, control == -E.EAGAIN,
                           "ADD_QUEUE", "the same once mounted")


def before_init(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G3: mounted, INIT not answered yet -> -EAGAIN (7.3.4 dev_uring.c:1674); after the reply
    it works. Control: the same ADD_QUEUE after the INIT reply gets past that check (0 on
    generation C; an unknown cmd_op before 7.3, -EINVAL from the dispatch)."""
    conn = Conn(ctx, "g3")
    conn.mount()
    h, arg0 = conn.read_init()
    res = conn.cmd(AQ, S.add_queue(0))
    conn.reply_init(h, arg0)
    after = conn.cmd(AQ, S.add_queue(0))
    ctx.expect_res_control("before_init_eagain", res, -E.EAGAIN, after, after in (0, -E.EINVAL),
                           "ADD_QUEUE",
                           "the same after the INIT reply")
    if _need_c(ctx, conn, ["after_init_ok"]):
        ctx.expect_res("after_init_ok", after, 0, "ADD_QUEUE after INIT:")


def unknown_cmd(ctx: Ctx, args) -> None:  # noqa: ANN001
    """G7: cmd_op 0, 5, 0x7f -> -EINVAL (the dispatch's default, 7.3.4 dev_uring.c:1724), and
    no poison. Control: the same SQE with cmd_op COMMIT_AND_FETCH (its fuse_uring_cmd_req,
    qid 0, is a valid commit) gets past every check before the dispatch to -ENOTCONN (no
    queue 0, fuse_uring_commit_fetch 7.3.4:1256)."""
    conn = Conn(ctx, "g7")
    conn.setup()
    control = conn.cmd(CF, S.add_queue(0))
    for op in S.UNKNOWN_CMD_OPS:
        ctx.expect_res_control(f"cmd_op_{op}_einval", conn.cmd(op, S.add_queue(0)), -E.EINVAL,
                               control, control == -E.ENOTCONN, f"cmd_op {op}:", "the same as cmd_op COMMIT_AND_FETCH")
    if _need_c(ctx, conn, ["no_poison"]):
        ctx.expect_res("no_poison", conn.cmd(AQ, S.add_queue(0)), 0, "ADD_QUEUE afterwards:")


def add_queue_errors(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Q1 qid >= nr_queues (7.3.4 dev_uring.c:1550), Q2 unknown flag (1555) -> -EINVAL; Q4
    existing queue -> -EEXIST (fuse_uring_create_queue, 387, the only -EEXIST). Control of
    all three: `first_ok`, the same ADD_QUEUE with qid 0, flags 0, no queue yet -> 0."""
    conn = _c_conn(ctx, "q")
    if conn is None:
        return
    n = conn.nr_queues
    ctx.diag(f"nr_queues {n}")
    bad_qid = conn.cmd(AQ, S.add_queue(n))
    bad_flag = conn.cmd(AQ, S.add_queue(0, flags=2))
    first = conn.cmd(AQ, S.add_queue(0))
    ctl = "ADD_QUEUE qid=0 flags=0 (first_ok)"
    ctx.expect_res_control("qid_out_of_range_einval", bad_qid, -E.EINVAL, first, first == 0,
                           f"ADD_QUEUE qid={n}:", ctl)
    ctx.expect_res_control("unknown_flag_einval", bad_flag, -E.EINVAL, first, first == 0,
                           "ADD_QUEUE flags=2:", ctl)
    ctx.expect_res("first_ok", first, 0, "ADD_QUEUE qid=0:")
    ctx.expect_res_control("twice_eexist", conn.cmd(AQ, S.add_queue(0)), -E.EEXIST, first,
                           first == 0, "second ADD_QUEUE qid=0:", "the first")
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
    if res is not None:  # a refused REGISTER poisons: ADD_QUEUE would get -EOPNOTSUPP
        ctx.result("after_register_eexist", False, f"not exercised: REGISTER qid={q} was refused: "
                   f"{ename(res)} (it must park, having created queue {q})")
        return
    ctx.expect_res("after_register_eexist", conn.cmd(AQ, S.add_queue(q)), -E.EEXIST,
                   f"ADD_QUEUE qid={q} after REGISTER:")



def add_queue_zc_unpriv(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Q3: ADD_QUEUE FUSE_URING_ZERO_COPY without CAP_SYS_ADMIN -> -EPERM (7.3.4
    dev_uring.c:1558). Controls: the same as root -> 0 (`zc_root_ok`, run first); and, as
    uid 65534, the same without ZERO_COPY gets past the capability check to -EEXIST (queue 0
    exists by then, fuse_uring_create_queue:387): uid 65534 may send the command at all."""
    conn = _c_conn(ctx, "q3")
    if conn is None:
        return
    root = conn.cmd(AQ, S.add_queue(0, flags=P.URING_ZERO_COPY))

    def unprivileged() -> list:
        conn.ring = None  # the child builds its own ring after dropping root
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        return [conn.cmd(AQ, S.add_queue(0, flags=P.URING_ZERO_COPY)),
                conn.cmd(AQ, S.add_queue(0))]

    c = Client(ctx, "unpriv", unprivileged, cpu=None)
    out = c.poll(10.0) or {"ok": False, "error": "no answer in 10s"}
    res, plain = out.get("value") if out.get("ok") else (None, None)
    if not out.get("ok"):
        ctx.diag(f"unprivileged child failed: {out}")
    ctx.diag(f"uid 65534, ADD_QUEUE qid=0 flags=0: {ename(plain)} (expected -EEXIST)")
    ctx.expect_res_control("zc_unprivileged_eperm", res, -E.EPERM,
                           root, root == 0 and plain == -E.EEXIST,
                           "ADD_QUEUE ZERO_COPY as uid 65534:",
                           "the same as root, and uid 65534 without ZERO_COPY")
    ctx.expect_res("zc_root_ok", root, 0, "the same as root (first):")


def add_bufpool_flags(ctx: Ctx, args) -> None:  # noqa: ANN001
    """B1: ADD_BUFPOOL with flags=1 (or qid >= nr_queues) -> -EINVAL (both one line, 7.3.4
    dev_uring.c:1584), nothing left behind. Control of both: `valid_after_ok`, the same with
    flags 0 and qid 0 -> 0, so each errno depends on its one field."""
    conn = _c_conn(ctx, "b1")
    if conn is None:
        return
    _, base = _pool(conn)
    length = 2 * conn.init.max_payload_sz
    ctx.expect_res("add_queue_ok", conn.cmd(AQ, S.add_queue(0)), 0, "ADD_QUEUE qid=0:")
    flags = conn.cmd(AB, S.add_bufpool(0, base, length, flags=1))
    qid = conn.cmd(AB, S.add_bufpool(conn.nr_queues, base, length))
    valid = conn.cmd(AB, S.add_bufpool(0, base, length))
    ctl = "ADD_BUFPOOL qid=0 flags=0 (valid_after_ok)"
    ctx.expect_res_control("flags_einval", flags, -E.EINVAL, valid, valid == 0, "ADD_BUFPOOL flags=1:",
                           ctl)
    ctx.expect_res_control("qid_out_of_range_einval", qid, -E.EINVAL, valid, valid == 0,
                           f"ADD_BUFPOOL qid={conn.nr_queues}:", ctl)
    ctx.expect_res("valid_after_ok", valid, 0,
                   "a correct ADD_BUFPOOL afterwards (nothing left behind):")



def add_bufpool_errors(ctx: Ctx, args) -> None:  # noqa: ANN001
    """B2 reserved != 0 (7.3.4 dev_uring.c:1588), B3 no queue (1593), B4 pool too small
    (1603), B5 mode already set (1629) -> -EINVAL. Control of all four: `first_ok`, the same
    ADD_BUFPOOL (qid 0, len max_payload_sz, reserved 0) on the queue, first -> 0."""
    conn = _c_conn(ctx, "b")
    if conn is None:
        return
    _, base = _pool(conn)
    mps = conn.init.max_payload_sz
    ctx.diag(f"max_payload_sz {mps}, nr_queues {conn.nr_queues}")
    no_queue = conn.cmd(AB, S.add_bufpool(0, base, mps))
    ctx.diag(f"ADD_QUEUE qid=0: {ename(conn.cmd(AQ, S.add_queue(0)))}")
    reserved = conn.cmd(AB, S.add_bufpool(0, base, mps, reserved=1))
    small = conn.cmd(AB, S.add_bufpool(0, base, mps - 1))
    first = conn.cmd(AB, S.add_bufpool(0, base, mps))
    ctl = "the same with the field fixed (first_ok)"
    ctx.expect_res_control("no_queue_einval", no_queue, -E.EINVAL, first, first == 0,
                           "B3 ADD_BUFPOOL before ADD_QUEUE:", ctl)
    ctx.expect_res_control("reserved_einval", reserved, -E.EINVAL, first, first == 0,
                           "B2 reserved=1:", ctl)
    ctx.expect_res_control("too_small_einval", small, -E.EINVAL, first, first == 0,
                           f"B4 len={mps - 1}:", ctl)
    ctx.expect_res("first_ok", first, 0, "valid ADD_BUFPOOL:")
    ctx.expect_res_control("second_einval", conn.cmd(AB, S.add_bufpool(0, base, mps)), -E.EINVAL,
                           first, first == 0, "B5 second ADD_BUFPOOL:", "the same, first")



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


def _field_register(ctx: Ctx, tag: str, bufpool: bool, zc_index: int,
                    payload: bool) -> tuple[Conn, int | None]:
    """One REGISTER qid 0 on a fresh generation C connection whose queue 0 was ADD_QUEUEd (and
    given a pool when bufpool): the header iovec is good, the payload iovec max_payload_sz
    long when payload, else (NULL, 0). The connection and the CQE res (None: parked)."""
    conn = Conn(ctx, tag)
    conn.setup()
    mps = conn.init.max_payload_sz
    ctx.diag(f"{tag}: ADD_QUEUE {ename(conn.cmd(AQ, S.add_queue(0)))}")
    if bufpool:
        _, base = _pool(conn)
        ctx.diag(f"{tag}: ADD_BUFPOOL {ename(conn.cmd(AB, S.add_bufpool(0, base, mps)))}")
    hdr = mmap.mmap(-1, mmap.PAGESIZE)
    pay = mmap.mmap(-1, mps)
    iov = (abi.Iovec * 2)(abi.Iovec(addr_of(hdr), P.URING_HDR_SIZE),
                          abi.Iovec(addr_of(pay), mps) if payload else abi.Iovec(None, 0))
    conn.get_ring().keep((hdr, pay, iov))
    return conn, conn.cmd(REG, S.register(0, zc_index=zc_index), ctypes.addressof(iov), 2,
                          timeout=1.5)


def register_bad_fields(ctx: Ctx, args) -> None:  # noqa: ANN001
    """R5 zc index on a plain queue (7.3.4 dev_uring.c:1444), R7 payload iovec on a bufpool
    queue (1458) -> -EINVAL, and the refusal poisons the connection (P1). Each on a fresh
    mount whose REGISTER is valid in every other field; control first: the same on another
    fresh mount with the field fixed (zc index 0; payload iovec NULL, 0) must park."""
    for case, bufpool in (("zc_index_plain_queue", False), ("payload_iov_bufpool_queue", True)):
        # the control: R5 zc_index 0 (a plain queue needs its payload iovec); R7 (NULL, 0)
        conn, control = _field_register(ctx, case[:6] + "c", bufpool, 0, not bufpool)
        if not _need_c(ctx, conn, [f"{case}_einval", f"{case}_poisons"]):
            continue
        conn, bad = _field_register(ctx, case[:6], bufpool, 0 if bufpool else 1, True)
        ctx.expect_res_control(f"{case}_einval", bad, -E.EINVAL, control, control is None,
                               "REGISTER:",
                               "the same with the field fixed, on a fresh mount")
        ctx.expect_res(f"{case}_poisons", conn.cmd(AQ, S.add_queue(conn.nr_queues - 1)),
                       -E.EOPNOTSUPP, "ADD_QUEUE afterwards (P1 poison):")
