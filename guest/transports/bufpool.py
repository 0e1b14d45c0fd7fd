"""bufpool: ADD_QUEUE + ADD_BUFPOOL per queue; REGISTER with iov[1] = {NULL, 0}."""

from __future__ import annotations

import errno
import mmap

from guest.transports.base import SetupError
from guest.transports.engine import Entry, RingEngine
from guest.transports.pool import Pool, add_bufpool, add_queue


class BufpoolTransport(RingEngine):
    """Payload at pool_base + ent_in_out.offset, re-read on every request."""

    name = "bufpool"
    needs_bufpool = True
    uses_pool = True
    buffer_field = "offset"

    def alloc(self) -> None:
        self.pools = [Pool(self.opts.pool_bufs, self.payload_size)
                      for _ in range(self.nr_queues)]
        self.counters.doc["uring"]["pool_bufs"] = self.opts.pool_bufs

    def queue_setup(self, qid: int) -> None:
        add_queue(self, qid)
        add_bufpool(self, qid, self.pools[qid], None)

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
