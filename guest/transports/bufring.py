"""bufring: ABI generation B, the posted bufring series v2 (10/14 "fuse: add io-uring buffer rings").

Written from 10/14 as the shared fixture has it (PORT-NOTES sections 5 and 7; fs/fuse/dev_uring.c
of the patched 7.2.13). Per queue q:
  * one headers area: entry k's struct fuse_uring_req_header at 288 * k (iov[0], at least
    queue_depth * 288 bytes);
  * one payload area cut into pool_bufs buffers of buf_size bytes (iov[1]; 1..65535 buffers,
    buf_size >= max_payload_sz);
  * per entry a REGISTER with sqe->buf_index = k, cmd_req.flags = FUSE_URING_BUFRING and
    init.{buf_size, queue_depth} (only a queue's first REGISTER needs iov and init; the later
    ones carry the same values, which the kernel ignores).
A request with payload (in-args after the first, or out-args: GETATTR too) names its buffer in
ent_in_out.buf_id (u16 at 20): its data is at payload + buf_id * buf_size. A request without
one reports buf_id 0 as well (10/14 has no "none"). With no free buffer the kernel queues the
request until a commit hands a buffer on: the committing entry keeps its buffer for a queued
payload request and recycles it otherwise.

Counters (doc "bufring"), so that a fallback or a wrong path fails the checks:
  payload / no_payload  requests delivered with / without a buffer (by opcode, the kernel's rule);
  ids                   buffer ids seen per queue; pool.high_water: most buffers held at once;
  kept                  a payload request delivered with the buffer its entry held before;
  waited                a payload request delivered to an entry whose commit was made while every
                        buffer of the queue was held and another entry was idle: it was queued
                        for a buffer (or arrived just after that commit; the server cannot tell);
  shared                a buffer id delivered while another entry of the queue holds it (D1);
  unexpected            a non-zero buf_id on a request without payload; bad_id: buf_id >= pool_bufs.
"""

from __future__ import annotations

import ctypes
import errno
import mmap

from guest.fuse import proto as P
from guest.server import NO_PAYLOAD_OPS
from guest.transports.base import SetupError
from guest.transports.engine import Entry, RingEngine
from guest.uring import abi
from guest.uring.ring import addr_of

B_CMD = P.URING_CMD_REQ["B"]
B_ENT = P.URING_ENT_IN_OUT["B"]
MAX_BUFS = 0xFFFF  # 10/14: nr_bufs > U16_MAX -> -EINVAL


def round_up(n: int, to: int) -> int:
    """n rounded up to a multiple of `to`."""
    return -(-n // to) * to


def register_req(qid: int, buf_size: int, queue_depth: int, flags: int = P.URING_BUFRING) -> bytes:
    """sqe->cmd of a generation-B REGISTER (32 bytes: flags, commit_id 0, qid, init)."""
    return B_CMD.pack(flags, 0, qid, 0, buf_size, queue_depth, 0, b"")


def commit_req(qid: int, commit_id: int) -> bytes:
    """sqe->cmd of a COMMIT_AND_FETCH (no flags, no init)."""
    return B_CMD.pack(0, commit_id, qid, 0, 0, 0, 0, b"")


class BufringTransport(RingEngine):
    """One headers area and one payload area per queue; payload buffers chosen by the kernel."""

    name = "bufring"
    buffer_field = "buf_id"

    def alloc(self) -> None:
        nbufs = self.opts.pool_bufs
        if not 1 <= nbufs <= MAX_BUFS:
            raise SetupError("BUFRING", errno.EINVAL, f"{nbufs} buffers: 1..{MAX_BUFS} are allowed")
        self.nbufs = nbufs
        self.buf_size = self.opts.buf_size or self.payload_size
        self.hdr_len = self.depth * P.URING_HDR_SIZE
        self.hdr_stride = round_up(self.hdr_len, mmap.PAGESIZE)
        self.hdr = mmap.mmap(-1, self.hdr_stride * self.nr_queues)
        self.hdr_addr = addr_of(self.hdr)
        for e in self.entries:
            e.hdr_off = e.qid * self.hdr_stride + e.idx * P.URING_HDR_SIZE
            e.slot = e.idx
        self.payload = [mmap.mmap(-1, nbufs * self.buf_size) for _ in range(self.nr_queues)]
        self.payload_addr = [addr_of(m) for m in self.payload]
        self.nobuf = mmap.mmap(-1, mmap.PAGESIZE)  # where a request without a buffer points
        self.iovs: list[object] = []
        self.busy: set[int] = set()  # entries (gid) with a request delivered, not committed
        self.holder: dict[tuple[int, int], int] = {}  # (qid, buf_id) -> gid of the busy holder
        self.starved: set[int] = set()  # entries whose last commit was made with every buffer held
        self.counters.doc["uring"].update(pool_bufs=nbufs, registered=False)
        self.counters.doc["uring"]["bufring"] = {"buf_size": self.buf_size, "nr_bufs": nbufs,
                                                 "headers_len": self.hdr_len}
        self.counters.doc["generation"] = "B"

    def register_cmd(self, e: Entry) -> tuple[bytes, int, int]:
        q = e.qid
        iov = (abi.Iovec * 2)(abi.Iovec(self.hdr_addr + q * self.hdr_stride, self.hdr_len),
                              abi.Iovec(self.payload_addr[q], self.nbufs * self.buf_size))
        e.iov = iov
        return register_req(q, self.buf_size, self.depth), ctypes.addressof(iov), 2

    def commit_cmd(self, e: Entry) -> bytes:
        return commit_req(e.qid, e.commit_id)

    def buffer_area(self, qid: int) -> tuple[int, int]:
        return self.nbufs, self.buf_size

    def fixed_args(self, e: Entry) -> tuple[int, int]:
        return 0, e.idx  # never IORING_URING_CMD_FIXED: fuse reads buf_index as the entry id

    def payload_loc(self, e: Entry, offset: int) -> tuple[mmap.mmap, int]:
        if e.op == 0:  # nothing in entry k's slot: the kernel put the request elsewhere
            raise SetupError("REQUEST", errno.EPROTO, f"no request header in slot {e.idx} of "
                             f"queue {e.qid}: is the kernel generation B?")
        bid = B_ENT.unpack(self.hdr, e.hdr_off + P.URING_ENT_OFFSET)[3]
        q, before = e.qid, e.buf
        starved = e.gid in self.starved
        self.starved.discard(e.gid)
        self.busy.add(e.gid)
        if e.op in NO_PAYLOAD_OPS:
            self.counters.buffer_event("bufring", "no_payload" if bid == 0 else "unexpected", q, None)
            e.buf = None
            return self.nobuf, 0
        if bid >= self.nbufs:
            self.counters.buffer_event("bufring", "bad_id", q, None)
            e.buf = None
            raise SetupError("REQUEST", errno.ERANGE, f"buf_id {bid} >= {self.nbufs} buffers")
        other = self.holder.get((q, bid))
        if other is not None and other != e.gid:
            self.counters.buffer_event("bufring", "shared", q, bid)
        self.holder[(q, bid)] = e.gid
        self.counters.buffer_event("bufring", "payload", q, bid)
        if before == bid:
            self.counters.buffer_event("bufring", "kept", q, None)
        if starved:
            self.counters.buffer_event("bufring", "waited", q, None)
        e.buf = bid
        return self.payload[q], bid * self.buf_size

    def held_key(self, e: Entry, offset: int, zc: bool) -> int | None:
        return e.buf

    def commit(self, e: Entry, error: int, data: bytes, payload_sz: int | None = None) -> None:
        q = e.qid
        if e.buf is not None:
            held = sum(1 for (hq, _), g in self.holder.items() if hq == q and g in self.busy)
            if held >= self.nbufs and any(o.live and o.gid not in self.busy for o in self.entries
                                          if o.qid == q and o is not e):  # and another entry idle
                self.starved.add(e.gid)
            if self.holder.get((q, e.buf)) == e.gid:
                del self.holder[(q, e.buf)]
        self.busy.discard(e.gid)
        super().commit(e, error, data, payload_sz)
