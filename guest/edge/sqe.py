"""Pure encoders for FUSE uring commands, including malformed ones.

No I/O: every function returns bytes, so tests/unit can pin the layouts. The
`fuse_uring_cmd_req` goes to SQE byte 48 (generation C layout, 40 bytes; the
A layout is its 24-byte prefix). `zc_index` overlays the low 16 bits of
`bufpool.uaddr` (bytes 24..25), which is exactly what REGISTER checks.
"""

from __future__ import annotations

import struct

from guest.fuse import proto as P
from guest.uring import abi

CMD_REQ = struct.Struct("<QQH6sQII")  # flags commit_id qid padding uaddr len reserved
SQE_SIZE = abi.SQE_SIZE
SMALL_SQE_SIZE = 64  # a ring without IORING_SETUP_SQE128
UNKNOWN_CMD_OPS = (0, 5, 0x7F)


def cmd_req(qid: int = 0, flags: int = 0, commit_id: int = 0, uaddr: int = 0,
            length: int = 0, reserved: int = 0, zc_index: int | None = None) -> bytes:
    """A fuse_uring_cmd_req; zc_index (if given) replaces the low 16 bits of uaddr."""
    if zc_index is not None:
        uaddr = (uaddr & ~0xFFFF) | (zc_index & 0xFFFF)
    return CMD_REQ.pack(flags, commit_id, qid, bytes(6), uaddr, length, reserved)


def add_queue(qid: int, flags: int = 0) -> bytes:
    """ADD_QUEUE request (flags: FUSE_URING_ZERO_COPY or garbage)."""
    return cmd_req(qid=qid, flags=flags)


def add_bufpool(qid: int, uaddr: int, length: int, flags: int = 0, reserved: int = 0) -> bytes:
    """ADD_BUFPOOL request; flags and reserved must be 0 for the kernel to accept it."""
    return cmd_req(qid=qid, flags=flags, uaddr=uaddr, length=length, reserved=reserved)


def commit(qid: int, commit_id: int) -> bytes:
    """COMMIT_AND_FETCH request."""
    return cmd_req(qid=qid, commit_id=commit_id)


def register(qid: int, zc_index: int = 0) -> bytes:
    """REGISTER request (the iovec goes in sqe->addr/len, not here)."""
    return cmd_req(qid=qid, zc_index=zc_index)


def uring_cmd_sqe(fd: int, cmd_op: int, user_data: int, cmd: bytes, addr: int = 0,
                  length: int = 0, cmd_flags: int = 0, buf_index: int = 0, pad1: int = 0,
                  size: int = SQE_SIZE) -> bytes:
    """A whole IORING_OP_URING_CMD slot (128 bytes, or 64 for a non-SQE128 ring).

    In a 64-byte slot only the first 16 bytes of `cmd` fit (that is what a ring
    without SQE128 hands the driver, and why the kernel must refuse it).
    """
    head = abi.SQE_CMD_HEAD.pack(abi.Op.URING_CMD, 0, 0, fd, cmd_op, pad1, addr, length,
                                 cmd_flags, user_data, buf_index, 0, 0)
    body = (head + cmd)[:size]
    return body + bytes(size - len(body))


def unique_with_int_bit(commit_id: int) -> int:
    """The reply `unique` of catalog E4: the request's id with FUSE_INT_REQ_BIT set."""
    return commit_id | 1


def out_header(unique: int, error: int = 0, length: int = 16) -> bytes:
    """A fuse_out_header for the ring header's in_out area."""
    return P.OUT_HEADER.pack(length, error, unique)
