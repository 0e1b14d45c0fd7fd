"""RingEngine: the io_uring serving loop shared by the ring transports.

One thread (the caller of start() and run()) submits every SQE: entries die
with their submitting thread. Subclasses fill in the hooks: alloc(),
queue_setup(), entry_iov(), fixed_args(), payload_loc(), zero_copy_request(), and
for the generation D (kmbuf) transports register_cmd(), commit_cmd(), ring_of(),
is_zero_copy() and held_key(); for the strict server (guest/transports/strict.py, which
checks every request the kernel delivers) buffer_field and buffer_area(). A transport with
one io_uring per queue puts the rings of queues 1.. in `extra_rings`: the loop polls their
fds from the main ring.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import heapq
import itertools
import mmap
import os
import struct
import sys
import time
import traceback

from guest.counters import Counters
from guest.fuse import proto as P
from guest.negotiate import Init
from guest.server import NO_PAYLOAD_OPS, Server
from guest.transports.base import Options, SetupError, nr_possible_cpus
from guest.transports.strict import Strict
from guest.uring import abi
from guest.uring.ring import Ring, addr_of

ENT, FIXED, TIMER, WAKE, SETUP, POLL = 1, 2, 3, 4, 5, 6
HDR_STRIDE = 512
ENT_IN_OUT = P.URING_ENT_IN_OUT["C"]  # on gen A, "offset" reads the zero padding
CMD_REQ = P.URING_CMD_REQ["C"]  # trailing union bytes stay zero for gen A
PAYLOAD_SZ = struct.Struct("<I")
REQ_FIELDS, IN_HEADER, OP_READ = P.URING_REQ.unpack_from, P.new_in_header, int(P.Op.READ)  # per request
TEARDOWN = (-errno.ENOTCONN, -errno.ECONNABORTED)


def ud(kind: int, idx: int = 0) -> int:
    """user_data for a CQE kind and an entry index."""
    return (kind << 48) | idx


def pow2(n: int) -> int:
    """Smallest power of two >= n."""
    return 1 << max(0, (n - 1).bit_length())


class Entry:
    """One ring entry: its header slot, payload location and current request."""

    __slots__ = ("gid", "qid", "idx", "hdr", "hdr_off", "iov", "slot", "commit_id", "loc", "held",
                 "zc", "live", "cflags", "op", "buf")

    def __init__(self, gid: int, qid: int, idx: int = 0) -> None:
        self.gid, self.qid, self.idx = gid, qid, idx
        self.hdr: mmap.mmap | None = None  # where the header lives: None = the engine's hdr
        self.hdr_off = gid * HDR_STRIDE
        self.iov: object = None
        self.slot = 0
        self.commit_id = 0
        self.loc: tuple[mmap.mmap, int] | None = None
        self.held: int | None = None
        self.zc: tuple | None = None
        self.live = False
        self.cflags = 0  # flags of the CQE that delivered the current request
        self.op = 0
        self.buf: int | None = None  # generation D: kmbuf buffer id the entry holds


class RingEngine:
    """Generic FUSE-over-io_uring server loop; see module docstring for hooks."""

    name = "ring"
    uses_uring = True
    needs_bufpool = False
    zero_copy = False
    uses_pool = False
    commit_sqe_flags = 0  # IOSQE_* on every COMMIT_AND_FETCH (edge scenarios: IOSQE_ASYNC)
    ring_setup_flags = 0  # IORING_SETUP_* beyond SQE128 (edge scenarios: SINGLE_ISSUER|DEFER_TASKRUN)
    #: where the kernel names a request's payload buffer: "none" (the entry's own buffer),
    #: "offset" (ent_in_out.offset, 7.3 pools), "buf_id" (ent_in_out.buf_id, generation B),
    #: "cqe" (IORING_CQE_F_BUFFER and the CQE's buffer id, generation D)
    buffer_field = "none"
    strict: Strict | None = None  # set by __init__ (None only in a partly built engine of a unit test)

    def __init__(self, devfd: int, server: Server, counters: Counters, init: Init,
                 opts: Options) -> None:
        self.devfd, self.server, self.counters, self.init = devfd, server, counters, init
        self.opts = opts
        self.nr_queues = nr_possible_cpus()
        self.depth = opts.queue_depth
        self.payload_size = init.max_payload_sz
        n = self.nr_queues * self.depth
        self.entries = [Entry(i, i // self.depth, i % self.depth) for i in range(n)]
        self.extra_rings: list[Ring] = []
        self.ring = Ring(pow2(min(n + 16, 4096)), cq_entries=pow2(2 * n + 64), flags=self.ring_setup_flags)
        self.hdr = mmap.mmap(-1, max(mmap.PAGESIZE, n * HDR_STRIDE))
        self.hdr_addr = addr_of(self.hdr)
        self.delayed: list[tuple[float, int, int, int, bytes, int | None]] = []
        self._seq = itertools.count()
        self.timer_at = 0.0
        self.stopping = False
        self.stop_deadline = 0.0
        self.on_stop = None  # daemon callback, run once from the loop
        self.efd = os.eventfd(0, os.EFD_CLOEXEC)
        self.efd_buf = ctypes.create_string_buffer(8)
        self.live = 0
        u = counters.doc["uring"]
        u.update(enabled=True, nr_queues=self.nr_queues, queue_depth=self.depth,
                 max_payload_sz=self.payload_size, zero_copy=self.zero_copy)
        self.strict = counters.strict = Strict(self)

    # -- hooks ---------------------------------------------------------------
    def alloc(self) -> None:
        """Allocate payload memory and io_uring buffers (before any command)."""

    def queue_setup(self, qid: int) -> None:
        """Per-queue commands before REGISTER (ADD_QUEUE, ADD_BUFPOOL)."""

    def entry_iov(self, e: Entry) -> tuple[int, int]:
        """(base, len) of the payload iovec for REGISTER."""
        raise NotImplementedError

    def fixed_args(self, e: Entry) -> tuple[int, int]:
        """(uring_cmd_flags, buf_index) for an entry's REGISTER and COMMIT."""
        return 0, 0

    def buffer_area(self, qid: int) -> tuple[int, int]:
        """(buffers, bytes per buffer) of queue qid's payload pool; (0, 0) without one."""
        return 0, 0

    def payload_loc(self, e: Entry, offset: int) -> tuple[mmap.mmap, int]:
        """Where an entry's request payload lives (mmap, offset)."""
        raise NotImplementedError

    def zero_copy_request(self, e: Entry, h: P.InHeader, arg0: bytes) -> None:
        """Serve a request flagged FUSE_URING_ENT_ZERO_COPY."""
        self.commit(e, -errno.EIO, b"")

    def fixed_done(self, e: Entry, res: int) -> None:
        """Completion of a fixed read/write issued by zero_copy_request()."""

    def fixed_failed(self, e: Entry, res: int) -> bool:
        """A fixed read/write failed: count it and fail the request with its errno."""
        if res >= 0:
            return False
        self.counters.bump("zc", "fixed_errors")
        self.counters.cqe_error(res)
        self.reply(e, res, b"")
        return True

    def hdr_of(self, e: Entry) -> mmap.mmap:
        """The memory entry e's 288-byte header lives in, at e.hdr_off: the engine's header area,
        or the buffer a generation D queue's headers moved to (KmbufTransport.replace_headers)."""
        return self.hdr if e.hdr is None else e.hdr

    def ring_of(self, qid: int) -> Ring:
        """The io_uring that carries queue qid's REGISTER and COMMIT_AND_FETCH SQEs."""
        return self.ring

    def register_cmd(self, e: Entry) -> tuple[bytes, int, int]:
        """(sqe->cmd, addr, len) of an entry's REGISTER: generations A/C pass an iovec
        pair {header, payload} (entry_iov) that must stay alive with the entry."""
        base, length = self.entry_iov(e)
        iov = (abi.Iovec * 2)(abi.Iovec(self.hdr_addr + e.hdr_off, P.URING_HDR_SIZE),
                              abi.Iovec(base or None, length))
        e.iov = iov
        return CMD_REQ.pack(0, 0, e.qid, b"", e.slot, 0, 0), ctypes.addressof(iov), 2

    def commit_cmd(self, e: Entry) -> bytes:
        """sqe->cmd of an entry's COMMIT_AND_FETCH."""
        return CMD_REQ.pack(0, e.commit_id, e.qid, b"", 0, 0, 0)

    def is_zero_copy(self, e: Entry, flags: int) -> bool:
        """The kernel handed this request's data pages over (C: a flag in ent_in_out)."""
        return bool(flags & P.URING_ENT_ZERO_COPY)

    def held_key(self, e: Entry, offset: int, zc: bool) -> int | None:
        """The pool buffer the current request holds until its commit (None: none)."""
        if self.uses_pool and e.op not in NO_PAYLOAD_OPS and not (zc and e.op == OP_READ):
            return offset
        return None

    # -- setup ---------------------------------------------------------------
    def sync_cmd(self, step: str, cmd_op: int, cmd: bytes, flags: int = 0,
                 buf_index: int = 0) -> int:
        """Submit one immediate command and wait for its CQE; SetupError if < 0."""
        self.ring.prep_uring_cmd(self.devfd, cmd_op, ud(SETUP), cmd, cmd_flags=flags,
                                 buf_index=buf_index)
        while True:
            self.ring.submit(wait_nr=1)
            for user_data, res, _ in self.ring.reap():
                if user_data >> 48 != SETUP:
                    self.counters.cqe_error(res)
                    continue
                if res < 0:
                    raise SetupError(step, res)
                return res

    def start(self) -> None:
        """Allocate, run per-queue setup, REGISTER every entry, check for errors."""
        self.alloc()
        for qid in range(self.nr_queues):
            self.queue_setup(qid)
        for e in self.entries:
            cmd, addr, length = self.register_cmd(e)
            flags, bi = self.fixed_args(e)
            self.ring_of(e.qid).prep_uring_cmd(self.devfd, P.URING_CMD_REGISTER, ud(ENT, e.gid),
                                               cmd, addr=addr, length=length, cmd_flags=flags,
                                               buf_index=bi)
            e.live = True
            self.live += 1
        rings = (self.ring, *self.extra_rings)
        while any(r.pending() for r in rings):
            for r in rings:
                r.submit()
        time.sleep(0.05)
        for r in rings:
            r.submit()
            for user_data, res, cflags in r.reap():
                if res < 0:
                    raise SetupError("REGISTER", res)
                self.on_cqe(user_data, res, cflags)
        for i, r in enumerate(self.extra_rings):
            self.ring.prep_poll(r.fd, abi.POLLIN, ud(POLL, i))
        self.counters.doc["uring"]["ready"] = True
        self._arm_wake()

    def poison(self) -> None:
        """Send one REGISTER with qid = nr_queues: the kernel disables io_uring."""
        iov = (abi.Iovec * 2)(abi.Iovec(self.hdr_addr, P.URING_HDR_SIZE),
                              abi.Iovec(None, 0))
        self.ring.keep(iov)
        cmd = CMD_REQ.pack(0, 0, self.nr_queues, b"", 0, 0, 0)
        with contextlib.suppress(SetupError):
            self.sync_cmd("POISON", P.URING_CMD_REGISTER, cmd)
        self.counters.doc["uring"]["ready"] = False

    # -- loop ----------------------------------------------------------------
    def _arm_wake(self) -> None:
        self.ring.prep_rw(abi.Op.READ, self.efd, ctypes.addressof(self.efd_buf), 8,
                          (1 << 64) - 1, ud(WAKE))

    def request_stop(self) -> None:
        self.stopping = True

    def device_gone(self) -> None:
        os.eventfd_write(self.efd, 1)

    def run(self) -> None:
        """Serve CQEs until every entry is gone, or a stop times out."""
        stop_handled = False
        while self.live > 0:
            if self.stopping and not stop_handled:
                stop_handled = True
                self.stop_deadline = time.monotonic() + 3.0
                self.ring.prep_timeout(0.25, ud(TIMER))
                if self.on_stop:
                    self.on_stop()
            if stop_handled and time.monotonic() > self.stop_deadline:
                self.counters.doc["exit_reason"] = f"stop timeout, {self.live} entries live"
                return
            for r in self.extra_rings:
                r.submit()
            self.ring.submit(wait_nr=1)
            for r in (self.ring, *self.extra_rings):
                for user_data, res, cflags in r.reap():
                    try:
                        self.on_cqe(user_data, res, cflags)
                    except Exception:  # noqa: BLE001 - answer EIO, keep serving
                        self._on_exception(user_data, res)
        self.counters.doc["exit_reason"] = "all entries released"

    def _on_exception(self, user_data: int, res: int) -> None:
        """A bug while serving: log it, count it, fail that request with EIO."""
        traceback.print_exc(file=sys.stderr)
        self.counters.bump("exception", "")
        kind, idx = user_data >> 48, user_data & 0xFFFFFFFFFFFF
        if kind in (ENT, FIXED) and res >= 0 and idx < len(self.entries):
            with contextlib.suppress(Exception):
                self.commit(self.entries[idx], -errno.EIO, b"")

    def on_cqe(self, user_data: int, res: int, cflags: int = 0) -> None:
        """Route one completion (cflags: the CQE's flags)."""
        kind, idx = user_data >> 48, user_data & 0xFFFFFFFFFFFF
        if kind == ENT:
            e = self.entries[idx]
            if res < 0:
                self.counters.cqe_error(res, teardown=res in TEARDOWN)
                if e.live:
                    e.live = False
                    self.live -= 1
                return
            e.cflags = cflags
            req = REQ_FIELDS(self.hdr_of(e), e.hdr_off)  # parsed once: strict and serve share it
            if self.strict is not None:
                self.strict.delivered(e, cflags, req)
            self.serve(e, req)
        elif kind == POLL:
            if res >= 0 or res == -errno.EINTR:
                self.ring.prep_poll(self.extra_rings[idx].fd, abi.POLLIN, ud(POLL, idx))
        elif kind == FIXED:
            self.fixed_done(self.entries[idx], res)
        elif kind == TIMER:
            self.flush_delayed()
            if self.stopping:
                self.ring.prep_timeout(0.25, ud(TIMER))
        elif kind == WAKE:
            self.stopping = True

    def serve(self, e: Entry, req: tuple | None = None) -> None:
        """A request landed in entry e: dispatch it and reply. req: its header's 14 values
        (P.URING_REQ) as on_cqe read them; None: read them here."""
        base, hdr = e.hdr_off, self.hdr_of(e)
        if req is None:
            req = REQ_FIELDS(hdr, base)
        h = IN_HEADER(req[:8])
        flags, commit_id, payload_sz, offset = req[9:13]
        e.commit_id = commit_id
        op = e.op = h.opcode
        n0 = P.ARG0_SIZE.get(op, 0)
        arg0 = hdr[base + 128:base + 128 + n0]
        self.counters.request("io_uring", op, e.qid, arg0)
        zc = self.is_zero_copy(e, flags)
        try:
            e.loc = self.payload_loc(e, offset)
        except SetupError:
            self.counters.bump("malformed", "")
            e.loc = None
            self.reply(e, -errno.EIO, b"")
            return
        held = self.held_key(e, offset, zc)
        if held is not None:
            e.held = held
            self.counters.pool_take(e.qid, held)
        if zc:
            self.zero_copy_request(e, h, arg0)
            return
        if payload_sz > self.payload_size:
            self.counters.bump("malformed", "")
            self.reply(e, -errno.EIO, b"")
            return
        mm, off = e.loc
        reply = self.server.dispatch(h, arg0, mm[off:off + payload_sz])
        if reply is None:
            reply = (-errno.ENOSYS, b"")
        if reply[1] and op in NO_PAYLOAD_OPS:
            reply = (-errno.EIO, b"")
        self.reply(e, *reply)

    def reply(self, e: Entry, error: int, data: bytes, payload_sz: int | None = None) -> None:
        """Commit now, or after --delay-ms."""
        if self.opts.delay <= 0:
            self.commit(e, error, data, payload_sz)
            return
        due = time.monotonic() + self.opts.delay
        heapq.heappush(self.delayed, (due, next(self._seq), e.gid, error, data, payload_sz))
        if not self.timer_at or due < self.timer_at or self.timer_at < time.monotonic():
            self.timer_at = due
            self.ring.prep_timeout(max(0.0, due - time.monotonic()), ud(TIMER))

    def flush_delayed(self) -> None:
        """Commit every delayed reply that is due; re-arm the timer."""
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now + 0.0005:
            _, _, gid, error, data, psz = heapq.heappop(self.delayed)
            self.commit(self.entries[gid], error, data, psz)
        self.timer_at = 0.0
        if self.delayed:
            self.timer_at = self.delayed[0][0]
            self.ring.prep_timeout(max(0.0, self.timer_at - now), ud(TIMER))

    def commit(self, e: Entry, error: int, data: bytes, payload_sz: int | None = None) -> None:
        """Write the reply into the entry's memory and queue COMMIT_AND_FETCH."""
        if self.strict is not None:
            self.strict.committed(e)
        n = len(data)
        if n > self.payload_size:
            error, data, n = -errno.EIO, b"", 0
        if n and e.loc is not None:
            mm, off = e.loc
            mm[off:off + n] = data
        if error:
            n, payload_sz = 0, 0
        hdr, base = self.hdr_of(e), e.hdr_off
        P.OUT_HEADER.pack_into(hdr, base, P.OUT_HEADER.size + n, error, e.commit_id)
        PAYLOAD_SZ.pack_into(hdr, base + 256 + 16, n if payload_sz is None else payload_sz)
        if e.held is not None:
            self.counters.pool_release(e.qid, e.held)
            e.held = None
        flags, bi = self.fixed_args(e)
        self.ring_of(e.qid).prep_uring_cmd(self.devfd, P.URING_CMD_COMMIT_AND_FETCH,
                                           ud(ENT, e.gid), self.commit_cmd(e), cmd_flags=flags,
                                           buf_index=bi, sqe_flags=self.commit_sqe_flags)
