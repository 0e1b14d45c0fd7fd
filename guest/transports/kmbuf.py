"""kmbuf and kmbuf-zero-copy: ABI generation D, the posted kmbuf series (v4, 25 patches).

Written from the series' docs patch (25/25) and uapi (03/25, 19/25, 24/25). Per queue q:
  1. its own io_uring: fuse pins buffer group 0 of the ring a REGISTER rides on, and a
     second queue on the same ring would get -EALREADY;
  2. a kernel-managed buffer ring, group 0 (IORING_REGISTER_KMBUF_RING): pool_bufs buffers
     (a power of two) of buf_size bytes (page-aligned, >= max_payload_sz: the series does
     not check that itself), mmapped through the ring fd at IORING_OFF_KMBUF_RING;
  3. a fixed buffer holding the queue's headers, entry i at i * 288: index 0, or with
     zero-copy index queue_depth, after queue_depth sparse slots (slot i receives entry i's
     client pages, read and written with READ_FIXED/WRITE_FIXED);
  4. per entry a REGISTER without iovecs: sqe->buf_index = i, init.flags = FUSE_URING_BUF_RING
     [| FUSE_URING_ZERO_COPY], init.queue_depth = queue_depth.
A request CQE with IORING_CQE_F_BUFFER names the buffer its payload is in (flags >> 16). The
kernel keeps that buffer for the entry's next request with a payload (no flag then) and
recycles it when a request has none.
"""

from __future__ import annotations

import errno
import mmap
import os

from guest.fuse import proto as P
from guest.server import NO_PAYLOAD_OPS
from guest.transports.base import SetupError
from guest.transports.engine import ENT_IN_OUT, FIXED, Entry, RingEngine, pow2, ud
from guest.uring import abi
from guest.uring.ring import Ring, addr_of

D_CMD = P.URING_CMD_REQ["D"]
BGID = 0  # FUSE_URING_RINGBUF_GROUP (19/25)
#: Requests whose data is in pages (in_pages/out_pages in fs/fuse): on a zero-copy queue
#: the kernel registers those pages in the entry's slot instead of copying them.
ZC_IN_OPS = frozenset({P.Op.WRITE, P.Op.NOTIFY_REPLY})
ZC_OUT_OPS = frozenset({P.Op.READ, P.Op.READDIR, P.Op.READDIRPLUS, P.Op.READLINK})
#: On a zero-copy queue these get no ring buffer: their data is all in pages.
ZC_NO_BUFFER = ZC_OUT_OPS | {P.Op.NOTIFY_REPLY}


def round_up(n: int, to: int) -> int:
    """n rounded up to a multiple of `to`."""
    return -(-n // to) * to


def kmbuf_supported() -> str | None:
    """None when the kernel registers a kmbuf ring, else why not."""
    try:
        r = Ring(4)
    except OSError as exc:
        return f"io_uring_setup: {exc.strerror}"
    try:
        r.register_kmbuf_ring(BGID, mmap.PAGESIZE, 1)
        r.unregister_kmbuf_ring(BGID)
        return None
    except OSError as exc:
        return (f"IORING_REGISTER_KMBUF_RING ({abi.Register.KMBUF_RING}) -> "
                f"{errno.errorcode.get(exc.errno, exc.errno)}: kernel lacks generation D")
    finally:
        r.close()


class KmbufTransport(RingEngine):
    """Headers in a fixed buffer, payload in kernel-chosen kmbuf buffers."""

    name = "kmbuf"
    init_flags = P.URING_BUF_RING
    buffer_field = "cqe"

    def alloc(self) -> None:
        nbufs = self.opts.pool_bufs
        if nbufs < 1 or nbufs & (nbufs - 1) or nbufs >= 1 << 16:
            raise SetupError("KMBUF_RING", errno.EINVAL, f"{nbufs} buffers: a power of two "
                             "below 65536 is needed")
        self.nbufs = nbufs
        self.buf_size = self.opts.buf_size or round_up(self.payload_size, mmap.PAGESIZE)
        self.qrings = [self.ring] + [Ring(pow2(self.depth + 16), cq_entries=pow2(4 * self.depth + 64),
                                                   flags=self.ring_setup_flags)
                                     for _ in range(1, self.nr_queues)]
        self.extra_rings = self.qrings[1:]
        hdr_len = self.depth * P.URING_HDR_SIZE
        stride = round_up(hdr_len, mmap.PAGESIZE)
        self.hdr = mmap.mmap(-1, stride * self.nr_queues)
        self.hdr_addr = addr_of(self.hdr)
        for e in self.entries:
            e.hdr_off = e.qid * stride + e.idx * P.URING_HDR_SIZE
            e.slot = e.idx
        self.nobuf = mmap.mmap(-1, mmap.PAGESIZE)  # where a request without a buffer points
        self.bufs: list[mmap.mmap] = []
        for q, ring in enumerate(self.qrings):
            self._step("KMBUF_RING", ring.register_kmbuf_ring, BGID, self.buf_size, nbufs)
            self.bufs.append(self._step("KMBUF_MMAP", ring.map_kmbuf, BGID, nbufs * self.buf_size))
            headers = (self.hdr_addr + q * stride, hdr_len)
            table = [(0, 0)] * self.depth + [headers] if self.zero_copy else [headers]
            self._step("REGISTER_BUFFERS", ring.register_buffers, table)
        self.counters.doc["uring"].update(pool_bufs=nbufs, registered=True,
                                          kmbuf={"buf_size": self.buf_size, "nr_bufs": nbufs,
                                                 "rings": len(self.qrings)})
        self.counters.doc["generation"] = "D"

    @staticmethod
    def _step(step: str, fn, *args):
        try:
            return fn(*args)
        except OSError as exc:
            raise SetupError(step, exc.errno or errno.EIO) from None

    def ring_of(self, qid: int) -> Ring:
        return self.qrings[qid]

    def headers_slot(self) -> int:
        """Fixed-buffer index of every queue's headers: 0, or queue_depth with zero-copy."""
        return self.depth if self.zero_copy else 0

    def replace_headers(self, qid: int, new: mmap.mmap) -> int:
        """Move queue qid's headers into `new` (>= queue_depth * 288 bytes) the way a server that
        swaps its own fixed-buffer table does: copy the queue's headers over, point the headers
        slot at `new` (IORING_REGISTER_BUFFERS_UPDATE on the queue's ring), then read requests
        from and write replies to `new` (entry i at i * 288). v4 looks the slot up by index for
        every request and every commit (19/25 fuse_uring_headers_prep; the v4 cover letter drops
        pinning "and just do lookup every time"), so after the update the kernel
        writes and reads `new`. Returns the slot; an OSError of the update leaves everything as
        it was."""
        mine = [e for e in self.entries if e.qid == qid]
        length = self.depth * P.URING_HDR_SIZE
        for e in mine:
            new[e.idx * P.URING_HDR_SIZE:(e.idx + 1) * P.URING_HDR_SIZE] = \
                self.hdr_of(e)[e.hdr_off:e.hdr_off + P.URING_HDR_SIZE]
        slot = self.headers_slot()
        self.ring_of(qid).update_buffers(slot, [(addr_of(new), length)])
        for e in mine:
            e.hdr, e.hdr_off = new, e.idx * P.URING_HDR_SIZE
        return slot

    def register_cmd(self, e: Entry) -> tuple[bytes, int, int]:
        return D_CMD.pack(0, 0, e.qid, self.init_flags, self.depth, b""), 0, 0

    def commit_cmd(self, e: Entry) -> bytes:
        return D_CMD.pack(0, e.commit_id, e.qid, 0, 0, b"")

    def fixed_args(self, e: Entry) -> tuple[int, int]:
        return 0, e.idx

    def buffer_area(self, qid: int) -> tuple[int, int]:
        return self.nbufs, self.buf_size

    def is_zero_copy(self, e: Entry, flags: int) -> bool:
        return self.zero_copy and e.op in ZC_IN_OPS | ZC_OUT_OPS

    def has_buffer(self, e: Entry) -> bool:
        """The kernel selects a ring buffer for this request (19/25 and 24/25: it has
        in-args after the first, or out-args, that are not zero-copied pages)."""
        if e.op in NO_PAYLOAD_OPS:
            return False
        return not (self.zero_copy and e.op in ZC_NO_BUFFER)

    def payload_loc(self, e: Entry, offset: int) -> tuple[mmap.mmap, int]:
        has = self.has_buffer(e)
        if e.cflags & abi.CQE_F_BUFFER:
            bid = e.cflags >> abi.CQE_BUFFER_SHIFT
            if bid >= self.nbufs:
                raise SetupError("REQUEST", errno.ERANGE, f"buffer id {bid} >= {self.nbufs}")
            self.counters.kmbuf_event("selected" if has else "unexpected", e.qid, bid)
            e.buf = bid
        elif not has:
            e.buf = None
        elif e.buf is None:
            self.counters.kmbuf_event("missing", e.qid, None)
            raise SetupError("REQUEST", errno.ENOBUFS, "payload request without a buffer id")
        else:
            self.counters.kmbuf_event("kept", e.qid, e.buf)
        if e.buf is None:
            return self.nobuf, 0
        return self.bufs[e.qid], e.buf * self.buf_size

    def held_key(self, e: Entry, offset: int, zc: bool) -> int | None:
        return e.buf


class KmbufZeroCopyTransport(KmbufTransport):
    """kmbuf plus one sparse slot per entry for the client's pages (CAP_SYS_ADMIN)."""

    name = "kmbuf-zero-copy"
    zero_copy = True
    init_flags = P.URING_BUF_RING | P.URING_INIT_ZERO_COPY

    def alloc(self) -> None:
        super().alloc()
        # Staging for data the server does not read from or write to a file (memory
        # backend, READDIR, READLINK): entry e's area at e.gid * payload_size.
        self.stage = os.memfd_create("fh-kmbuf-zc", os.MFD_CLOEXEC)
        self.counters.doc["uring"]["zero_copy"] = True

    def zero_copy_request(self, e: Entry, h: P.InHeader, arg0: bytes) -> None:
        op, ring = h.opcode, self.ring_of(e.qid)
        stage_off = e.gid * self.payload_size
        if op in (P.Op.READ, P.Op.WRITE):
            fh, offset, size = (P.READ_IN if op == P.Op.READ else P.WRITE_IN).unpack(arg0)[:3]
            fd = self.server.backing_fd(fh)
            kind = "read" if op == P.Op.READ else "write"
            if fd is not None:  # the data moves between the file and the client's pages
                e.zc = (kind, None)
                rw = abi.Op.READ_FIXED if op == P.Op.READ else abi.Op.WRITE_FIXED
                ring.prep_rw(rw, fd, 0, size, offset, ud(FIXED, e.gid), buf_index=e.slot)
                return
        if op in ZC_IN_OPS:  # no file to write to: pull the pages into staging, then dispatch
            if op == P.Op.NOTIFY_REPLY:  # the retrieved data's size is the payload size (24/25)
                size = ENT_IN_OUT.unpack(self.hdr_of(e), e.hdr_off + P.URING_ENT_OFFSET)[2]
            e.zc = ("write-staged", (h, arg0))
            ring.prep_rw(abi.Op.WRITE_FIXED, self.stage, 0, size, stage_off,
                         ud(FIXED, e.gid), buf_index=e.slot)
            return
        reply = self.server.dispatch(h, arg0, b"") or (-errno.ENOSYS, b"")
        if op not in ZC_OUT_OPS or reply[0] or not reply[1]:
            self.reply(e, reply[0], b"" if op in ZC_OUT_OPS else reply[1],
                       payload_sz=0 if op in ZC_OUT_OPS else None)
            return
        os.pwrite(self.stage, reply[1], stage_off)  # push the reply into the client's pages
        e.zc = ("staged", None)
        ring.prep_rw(abi.Op.READ_FIXED, self.stage, 0, len(reply[1]), stage_off,
                     ud(FIXED, e.gid), buf_index=e.slot)

    def fixed_done(self, e: Entry, res: int) -> None:
        kind, ctx = e.zc or ("?", None)
        e.zc = None
        if self.fixed_failed(e, res):
            return
        self.counters.bump("zc", "read" if kind in ("read", "staged") and e.op == P.Op.READ
                           else "write" if kind.startswith("write") else "staged")
        self.counters.bump("zc", "bytes", res)
        if kind == "write":
            self.reply(e, 0, P.WRITE_OUT.pack(res, 0))
        elif kind == "write-staged":
            h, arg0 = ctx
            data = os.pread(self.stage, res, e.gid * self.payload_size)
            self.reply(e, *(self.server.dispatch(h, arg0, data) or (-errno.ENOSYS, b"")))
        else:
            self.reply(e, 0, b"", payload_sz=res)
