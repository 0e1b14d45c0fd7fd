"""zero-copy: zc queues; READ/WRITE data moves with READ_FIXED/WRITE_FIXED.

Buffer table (REGISTER_BUFFERS2 sparse, then BUFFERS_UPDATE): slot q holds the
pool of queue q; slot nr_queues + i is entry i's empty zero-copy slot. Needs
CAP_SYS_ADMIN (ADD_QUEUE answers EPERM otherwise) and the passthrough backend.
"""

from __future__ import annotations

import errno

from guest.fuse import proto as P
from guest.transports.base import SetupError
from guest.transports.engine import FIXED, Entry, ud
from guest.transports.pool import Pool, add_bufpool, add_queue
from guest.transports.registered import RegisteredTransport
from guest.uring import abi

READ, WRITE = int(P.Op.READ), int(P.Op.WRITE)  # plain ints: no enum lookup per request


class ZeroCopyTransport(RegisteredTransport):
    """Registered bufpool plus one kernel-buffer slot per entry (fixed args, entry iovec
    and payload location are the registered pool's)."""

    name = "zero-copy"
    zero_copy = True

    def alloc(self) -> None:
        self.pools = [Pool(self.opts.pool_bufs, self.payload_size)
                      for _ in range(self.nr_queues)]
        for e in self.entries:
            e.slot = self.nr_queues + e.gid
        try:
            self.ring.register_buffers_sparse(self.nr_queues + len(self.entries))
            self.ring.update_buffers(0, [(p.base, p.length) for p in self.pools])
        except OSError as exc:
            raise SetupError("REGISTER_BUFFERS2", exc.errno or errno.EIO) from None
        u = self.counters.doc["uring"]
        u.update(pool_bufs=self.opts.pool_bufs, registered=True, zero_copy=True)

    def queue_setup(self, qid: int) -> None:
        add_queue(self, qid, P.URING_ZERO_COPY)
        add_bufpool(self, qid, self.pools[qid], qid)

    def zero_copy_request(self, e: Entry, h: P.InHeader, arg0: bytes) -> None:
        if h.opcode == READ:
            fh, offset, size = P.READ_IN.unpack(arg0)[:3]
            op, kind = abi.Op.READ_FIXED, "read"
        elif h.opcode == WRITE:
            fh, offset, size = P.WRITE_IN.unpack(arg0)[:3]
            op, kind = abi.Op.WRITE_FIXED, "write"
        else:
            self.reply(e, -errno.EIO, b"")
            return
        fd = self.server.backing_fd(fh)
        if fd is None:
            self.counters.bump("zc", "fixed_errors")
            self.reply(e, -errno.EIO, b"")
            return
        e.zc = (kind, size)
        self.ring.prep_rw(op, fd, 0, size, offset, ud(FIXED, e.gid), buf_index=e.slot)

    def fixed_done(self, e: Entry, res: int) -> None:
        kind, _ = e.zc or ("?", 0)
        e.zc = None
        if self.fixed_failed(e, res):
            return
        self.counters.bump("zc", kind)
        self.counters.bump("zc", "bytes", res)
        if kind == "read":
            self.reply(e, 0, b"", payload_sz=res)
        else:
            self.reply(e, 0, P.WRITE_OUT.pack(res, 0))
