"""bufpool-registered: the pool of queue q is io_uring fixed buffer q.

ADD_BUFPOOL, every REGISTER and every COMMIT_AND_FETCH of the queue carry
IORING_URING_CMD_FIXED and sqe->buf_index = q.
"""

from __future__ import annotations

import errno
import mmap

from guest.transports.base import SetupError
from guest.transports.engine import Entry, RingEngine
from guest.transports.pool import Pool, add_bufpool, add_queue
from guest.uring import abi


class RegisteredTransport(RingEngine):
    """Bufpool whose memory is pinned through IORING_REGISTER_BUFFERS."""

    name = "bufpool-registered"
    needs_bufpool = True
    uses_pool = True
    buffer_field = "offset"

    def alloc(self) -> None:
        self.pools = [Pool(self.opts.pool_bufs, self.payload_size)
                      for _ in range(self.nr_queues)]
        try:
            self.ring.register_buffers([(p.base, p.length) for p in self.pools])
        except OSError as exc:
            raise SetupError("REGISTER_BUFFERS", exc.errno or errno.EIO) from None
        u = self.counters.doc["uring"]
        u.update(pool_bufs=self.opts.pool_bufs, registered=True)

    def queue_setup(self, qid: int) -> None:
        add_queue(self, qid)
        add_bufpool(self, qid, self.pools[qid], qid)

    def fixed_args(self, e: Entry) -> tuple[int, int]:
        return abi.URING_CMD_FIXED, e.qid

    def buffer_area(self, qid: int) -> tuple[int, int]:
        pool = self.pools[qid]
        return pool.length // pool.buf_size, pool.buf_size

    def entry_iov(self, e: Entry) -> tuple[int, int]:
        return 0, 0

    def payload_loc(self, e: Entry, offset: int) -> tuple[mmap.mmap, int]:
        pool = self.pools[e.qid]
        if not pool.contains(offset):
            raise SetupError("REQUEST", errno.EFAULT, f"pool offset {offset} out of range")
        return pool.mm, offset
