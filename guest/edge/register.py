"""REGISTER with a malformed iovec pair (catalog R2, R3, R4, R6, R9; generations A and C).

Every failing REGISTER poisons its connection (rule 7.1), so each case gets a fresh
mount; after the bad command a well-formed REGISTER must then get -EOPNOTSUPP. The bad
REGISTER is the well-formed one with one field broken; control: the well-formed one, on a
fresh mount of its own, must park (else the case fails as not exercised).

The checks each case names (7.3.4; 7.2.13 has the same order): R2 sqe->len
(fs/fuse/dev_uring.c:1407); R3 the copy of the iovec array (lib/iov_iter.c:1281-1288,
copy_iovec_from_user: -EFAULT); R4 a length that does not fit ssize_t (lib/iov_iter.c:1292);
R6 the header length (dev_uring.c:1449); R9 the payload length of a per-entry queue (1464).
"""

from __future__ import annotations

import ctypes
import errno
import mmap

from guest.edge import sqe as S
from guest.edge.conn import Conn
from guest.edge.core import Ctx
from guest.fuse import proto as P
from guest.uring import abi
from guest.uring.ring import addr_of

E = errno
REG = P.URING_CMD_REGISTER
#: (case prefix, catalog id, what is wrong, expected CQE res)
CASES = (
    ("iov_count_1", "R2", "sqe->len = 1 instead of 2", -E.EINVAL),
    ("iov_array_unmapped", "R3", "sqe->addr points at page 0", -E.EFAULT),
    ("iov_len_top_bit", "R4", "payload iov_len = 1 << 63", -E.EINVAL),
    ("header_too_short", "R6", "header iov_len = 287 (< 288)", -E.EINVAL),
    ("payload_too_short", "R9", "payload iov_len = max_payload_sz - 1", -E.EINVAL),
)


def case_names() -> tuple[str, ...]:
    """The KTAP cases of the scenario, two per catalog entry."""
    return tuple(n for c in CASES for n in (f"{c[0]}_{ename_suffix(c[3])}", f"{c[0]}_poisons"))


def ename_suffix(res: int) -> str:
    return errno.errorcode[-res].lower()


def _iovecs(conn: Conn) -> tuple[ctypes.Array, list]:
    """A well-formed (header, payload) iovec pair and the buffers it points at."""
    mps = conn.init.max_payload_sz
    hdr = mmap.mmap(-1, mmap.PAGESIZE)
    pay = mmap.mmap(-1, mps)
    iov = (abi.Iovec * 2)(abi.Iovec(addr_of(hdr), P.URING_HDR_SIZE), abi.Iovec(addr_of(pay), mps))
    keep = [hdr, pay, iov]
    conn.ctx.closers.append(hdr.close)
    conn.ctx.closers.append(pay.close)
    return iov, keep


def _control(ctx: Ctx, ref: str) -> int | None:
    """The well-formed REGISTER qid 0 on a fresh mount: its CQE res, None when parked."""
    conn = Conn(ctx, ref.lower() + "c")
    conn.setup()
    good, keep = _iovecs(conn)
    conn.get_ring().keep(keep)
    res = conn.cmd(REG, S.register(0), ctypes.addressof(good), 2, timeout=1.0)
    conn.abort()
    conn.close()
    return res


def register_bad_iov(ctx: Ctx, args) -> None:  # noqa: ANN001, ARG001
    """R2/R3/R4/R6/R9: each malformed REGISTER gets its errno and poisons the connection."""
    for prefix, ref, what, want in CASES:
        control = _control(ctx, ref)
        conn = Conn(ctx, ref.lower())
        conn.setup()
        ring = conn.get_ring()
        bad, keep = _iovecs(conn)
        good, keep2 = _iovecs(conn)
        ring.keep((keep, keep2))
        addr, count = ctypes.addressof(bad), 2
        if ref == "R2":
            count = 1
        elif ref == "R3":
            addr = 8
        elif ref == "R4":
            bad[1].iov_len = 1 << 63
        elif ref == "R6":
            bad[0].iov_len = P.URING_HDR_SIZE - 1
        elif ref == "R9":
            bad[1].iov_len = conn.init.max_payload_sz - 1
        ctx.expect_res_control(f"{prefix}_{ename_suffix(want)}",
                               conn.cmd(REG, S.register(0), addr, count), want,
                               control, control is None,
                               f"{ref} REGISTER with {what}:",
                               "the well-formed REGISTER on a fresh mount")
        res = conn.cmd(REG, S.register(0), ctypes.addressof(good), 2, timeout=1.5)
        ctx.expect_res(f"{prefix}_poisons", res, -E.EOPNOTSUPP,
                       "a well-formed REGISTER afterwards (poison rule 7.1; None = it was accepted):")
        conn.abort()
        conn.close()
