"""Buffer pools for the bufpool transports: per-queue memory and ADD_* commands.

Not a transport itself; bufpool, bufpool-registered and zero-copy use it.
"""

from __future__ import annotations

import errno
import mmap

from guest.fuse import proto as P
from guest.transports.base import SetupError
from guest.transports.engine import CMD_REQ, RingEngine
from guest.uring import abi
from guest.uring.ring import addr_of


class Pool:
    """pool_bufs buffers of max_payload_sz bytes for one queue, page-aligned."""

    def __init__(self, nbufs: int, buf_size: int) -> None:
        if nbufs < 1:
            raise SetupError("POOL", errno.EINVAL, "need at least one pool buffer")
        self.buf_size = buf_size
        self.length = nbufs * buf_size
        if self.length >= 1 << 32:
            raise SetupError("POOL", errno.E2BIG, "pool length must fit in u32")
        self.mm = mmap.mmap(-1, self.length)
        self.mm[0:1] = b"\0"  # fault in the first page
        self.base = addr_of(self.mm)
        if self.base == 0 or self.base % mmap.PAGESIZE:
            raise SetupError("POOL", errno.EFAULT, f"bad pool address {self.base:#x}")

    def contains(self, offset: int) -> bool:
        """offset + one buffer fits inside the pool."""
        return offset >= 0 and offset + self.buf_size <= self.length


def add_queue(engine: RingEngine, qid: int, flags: int = 0) -> None:
    """FUSE_IO_URING_CMD_ADD_QUEUE (flags: FUSE_URING_ZERO_COPY)."""
    engine.sync_cmd("ADD_QUEUE", P.URING_CMD_ADD_QUEUE, CMD_REQ.pack(flags, 0, qid, b"",
                                                                     0, 0, 0))


def add_bufpool(engine: RingEngine, qid: int, pool: Pool, fixed_index: int | None) -> None:
    """FUSE_IO_URING_CMD_ADD_BUFPOOL, optionally through registered buffer k."""
    cmd = CMD_REQ.pack(0, 0, qid, b"", pool.base, pool.length, 0)
    if fixed_index is None:
        engine.sync_cmd("ADD_BUFPOOL", P.URING_CMD_ADD_BUFPOOL, cmd)
    else:
        engine.sync_cmd("ADD_BUFPOOL", P.URING_CMD_ADD_BUFPOOL, cmd,
                        flags=abi.URING_CMD_FIXED, buf_index=fixed_index)
