"""A real mount served by a transport engine that the scenario steps by hand.

`Served` mounts, answers INIT, starts the named ring transport (bufpool by
default) and a /dev/fuse reader, but delivers ring requests to the scenario:
with `auto` off a request stays held until `answer()`; `pump()` reaps CQEs
for a bounded time. Raw (possibly wrong) commands go through `raw()`.
"""

from __future__ import annotations

import ctypes
import os
import time

from guest.counters import Counters
from guest.devfuse import DevFuseReader
from guest.edge import sqe as S
from guest.edge.conn import CMD_UD, Conn
from guest.edge.core import Ctx
from guest.fuse import proto as P
from guest.fuse.fs import MemoryFs
from guest.fuse.memfd import MemfdFs
from guest.server import NO_PAYLOAD_OPS, Server
from guest.transports import base
from guest.transports.engine import ENT, ENT_IN_OUT, RingEngine
from guest.uring import abi

B_ENT = P.URING_ENT_IN_OUT["B"]  # generation B's ent_in_out: buf_id is field 3


def manual_class(cls: type[RingEngine]) -> type[RingEngine]:
    """A subclass of transport cls whose requests the scenario answers."""

    class Manual(cls):  # type: ignore[misc, valid-type]
        auto = False  # answer requests at once (unless hold() says otherwise)
        hold = None  # callable(info) -> True to keep that request for the scenario
        zero_pool_qid: int | None = None  # ADD_BUFPOOL with uaddr=0 on this queue
        int_bit_once = False  # next reply's unique gets bit 0 (catalog E4)
        claim_payload: dict[str, int]  # op name -> payload_sz its next reply claims (catalog U7; set per instance)
        lied: list[dict]  # path proof of claim_payload: the replies that carried a claim (an error reply never does)
        int_bit_sent: list[dict]  # path proof of int_bit_once: the reply whose unique got bit 0

        def queue_setup(self, qid: int) -> None:
            if qid != self.zero_pool_qid:
                return super().queue_setup(qid)
            from guest.transports.base import SetupError
            from guest.transports.pool import add_bufpool, add_queue
            add_queue(self, qid)
            req = S.add_bufpool(qid, 0, self.payload_size)
            try:
                self.zero_pool_res = self.sync_cmd("ADD_BUFPOOL(uaddr=0)",
                                                   P.URING_CMD_ADD_BUFPOOL, req)
            except SetupError as exc:  # refused (the correct answer): use a real pool
                self.zero_pool_res = -exc.errno
                add_bufpool(self, qid, self.pools[qid], None)

        def serve(self, e, req=None) -> None:  # noqa: ANN001 - req: read again below (held requests too)
            h = P.parse_in_header(self.hdr_of(e), e.hdr_off)
            flags, cid, psz, off = ENT_IN_OUT.unpack(self.hdr_of(e), e.hdr_off + 256)[:4]
            e.op = h.opcode  # what is_zero_copy() of generation D reads
            info = {"op": P.op_name(h.opcode), "unique": h.unique, "commit_id": cid,
                    "entry": e.gid, "qid": e.qid, "offset": off, "payload_sz": psz,
                    "buf": self.buffer_id(e, h.opcode), "zero_copy": self.is_zero_copy(e, flags),
                    "pid": h.pid, "t": time.monotonic()}
            self.log.append(info)
            self.infos[e.gid] = info
            if self.auto and not (self.hold and self.hold(info)):
                self.answer(e)
            else:
                self.held.append(e)

        def buffer_id(self, e, op: int) -> int | None:  # noqa: ANN001
            """The payload buffer the kernel named for this request: the CQE's (generation D;
            None when the entry keeps the one it held), ent_in_out.buf_id (generation B, for a
            request with a payload), else None (pool transports: see "offset")."""
            if e.cflags & abi.CQE_F_BUFFER:
                return e.cflags >> abi.CQE_BUFFER_SHIFT
            if cls.name == "bufring" and op not in NO_PAYLOAD_OPS:
                return B_ENT.unpack(self.hdr, e.hdr_off + P.URING_ENT_OFFSET)[3]
            return None

        def answer(self, e) -> None:  # noqa: ANN001
            if e in self.held:
                self.held.remove(e)
            self.answered.append((e.gid, e.commit_id, time.monotonic()))
            cls.serve(self, e)

        def commit(self, e, error, data, payload_sz=None) -> None:  # noqa: ANN001
            info = self.infos.get(e.gid, {})
            op = info.get("op", "")
            if op in self.claim_payload and not error:  # what fits into the buffer, but claim more
                claim = self.claim_payload.pop(op)
                data, payload_sz = data[:self.payload_size], claim
                self.lied.append({"op": op, "unique": info.get("unique"), "claim": claim, "sent": len(data)})
            super().commit(e, error, data, payload_sz)
            if self.int_bit_once:
                self.int_bit_once = False
                self.int_bit_sent.append({"op": op, "unique": info.get("unique")})
                P.OUT_HEADER.pack_into(self.hdr_of(e), e.hdr_off, P.OUT_HEADER.size + len(data),
                                       error, S.unique_with_int_bit(e.commit_id))

        def on_cqe(self, user_data: int, res: int, cflags: int = 0) -> None:
            if user_data >> 48 == CMD_UD >> 48:
                self.aux[user_data] = res
                return
            if user_data >> 48 == ENT and res < 0:
                self.ent_errors.append((user_data & 0xFFFF, res, time.monotonic()))
            super().on_cqe(user_data, res, cflags)

    Manual.__name__ = f"Manual{cls.__name__}"
    return Manual


def devfuse_server(conn: Conn, files: dict[bytes, bytes], bufsize: int = 1 << 20) -> tuple[Counters, MemoryFs]:
    """A MemoryFs holding files, served over /dev/fuse only by a reader thread with a read
    buffer of bufsize bytes, on a mount whose INIT left FUSE_OVER_IO_URING out: the legacy
    reference a transport is judged against. Returns (its counters, the filesystem)."""
    fs = MemoryFs()
    for name, data in files.items():
        _, ino = fs.create(P.ROOT_ID, name, 0o644, 0, 0, 0)
        fs.write(ino, ino, 0, data)
    counters = Counters("legacy")
    DevFuseReader(conn.fd, Server(fs, counters), counters, bufsize).start()
    return counters, fs


class Served:
    """Mount + INIT + engine + /dev/fuse reader, stepped by the scenario."""

    def __init__(self, ctx: Ctx, tag: str, transport: str = "bufpool", queue_depth: int = 4,
                 pool_bufs: int = 4, files: dict[bytes, bytes] | None = None,
                 zero_pool_qid: int | None = None, start: bool = True, max_write: int = 131072,
                 max_pages: int | None = None, buf_size: int = 0, ring_flags: int = 0,
                 max_background: int = 64, init_flags: int = 0, zero_copy_files: bool | None = None) -> None:
        self.ctx = ctx
        self.conn = Conn(ctx, tag)
        self.init = self.conn.setup(max_write=max_write, max_pages=max_pages, max_background=max_background,
                                    extra=init_flags)
        self.mnt = self.conn.mnt
        self.counters = Counters(transport)
        opts = base.Options(queue_depth, pool_bufs, 0.0, buf_size)
        cls = manual_class(base.get(transport))
        # zero_copy_files (default: on for 7.3's zero-copy): opens answer FOPEN_IO_URING_ZERO_COPY
        # where the transport decides per open (generation C; D is zero-copy per queue), so a
        # READ/WRITE's pages reach the entry's slot. Its files then live in memfds (MemfdFs):
        # the engine's READ_FIXED/WRITE_FIXED need a backing fd. FUSE_HARNESS_ZERO_COPY_FILES=0
        # turns them off (the server of before, whose zero-copy cases were vacuous: with it, those
        # cases must fail as "not exercised").
        per_open = bool(cls.zero_copy and cls.needs_bufpool)
        if zero_copy_files is None and os.environ.get("FUSE_HARNESS_ZERO_COPY_FILES") == "0":
            zero_copy_files = False
        self.zero_copy_open = per_open and zero_copy_files is not False
        self.fs = MemfdFs() if self.zero_copy_open else MemoryFs()
        if self.zero_copy_open:
            ctx.closers.append(self.fs.close)
        for name, data in (files or {}).items():
            _, ino = self.fs.create(P.ROOT_ID, name, 0o644, 0, 0, 0)
            self.fs.write(ino, ino, 0, data)
        self.server = Server(self.fs, self.counters, zero_copy_open=self.zero_copy_open)
        cls.ring_setup_flags = ring_flags  # IORING_SETUP_*: the rings are made by this thread
        self.engine = cls(self.conn.fd, self.server, self.counters, self.init, opts)
        e = self.engine
        e.log, e.held, e.answered, e.aux, e.ent_errors, e.infos = [], [], [], {}, [], {}
        e.zero_pool_qid = zero_pool_qid
        e.claim_payload, e.lied, e.int_bit_sent = {}, [], []
        ctx.closers.append(self.close_rings)
        bufsize = max(self.init.max_payload_sz, self.init.max_write) + 8192
        self.reader = DevFuseReader(self.conn.fd, self.server, self.counters, bufsize)
        self.reader.start()
        self._seq = 0
        if start:
            e.start()

    def path(self, name: str) -> str:
        return f"{self.mnt}/{name}"

    def rings(self) -> tuple:
        """Every io_uring of the engine (generation D: one per queue)."""
        return (self.engine.ring, *self.engine.extra_rings)

    def close_rings(self) -> None:
        """Tear every ring down for real (kmbuf buffer mappings too: they hold the ring)."""
        bufs = getattr(self.engine, "bufs", [])
        for q, r in enumerate(self.rings()):
            r.close(*bufs[q:q + 1])

    def pump(self, timeout: float, until=None) -> bool:  # noqa: ANN001
        """Reap and route CQEs for up to timeout s; True as soon as until() holds."""
        end = time.monotonic() + min(timeout, self.ctx.left())
        while True:
            for ring in self.rings():
                if ring.fd < 0:
                    continue
                ring.submit()
                for ud, res, cflags in ring.reap():
                    self.engine.on_cqe(ud, res, cflags)
            if until is not None and until():
                for ring in self.rings():
                    if ring.fd >= 0:
                        ring.submit()
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.003)

    def wait_held(self, n: int, timeout: float) -> bool:
        """Pump until at least n requests are held."""
        return self.pump(timeout, lambda: len(self.engine.held) >= n)

    def write_from_slot(self, e, fd: int, length: int, tag: int) -> int | None:  # noqa: ANN001
        """WRITE_FIXED of `length` bytes from entry e's zero-copy buffer slot to fd at 0, on
        e's ring: the CQE res (bytes, or -errno once the slot is empty), None if none came in
        3 s. Other CQEs meanwhile go to the engine."""
        ring = self.engine.ring_of(e.qid)
        ring.prep_rw(abi.Op.WRITE_FIXED, fd, 0, length, 0, tag, buf_index=e.slot)
        got: list[int] = []
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not got:
            ring.submit()
            for ud, res, cflags in ring.reap():
                if ud == tag:
                    got.append(res)
                else:
                    self.engine.on_cqe(ud, res, cflags)
            time.sleep(0.01)
        return got[0] if got else None

    def raw(self, cmd_op: int, req: bytes, addr: int = 0, length: int = 0,
            timeout: float = 3.0) -> int | None:
        """One command on the engine's ring; its CQE res, or None if none came."""
        self._seq += 1
        ud = CMD_UD | (0x8000 + self._seq)
        flags, bi = (0, 0)
        ring = self.engine.ring
        off = ring.get_sqe()
        ring.sqes[off:off + S.SQE_SIZE] = S.uring_cmd_sqe(self.conn.fd, cmd_op, ud, req, addr,
                                                         length, flags, bi)
        self.pump(timeout, lambda: ud in self.engine.aux)
        return self.engine.aux.get(ud)

    def bad_register(self, qid: int) -> int | None:
        """REGISTER with the given (bad) qid, in the engine's own ABI: a valid header iovec
        (A/C), or init.flags = FUSE_URING_BUF_RING and no iovec (generation D)."""
        if hasattr(self.engine, "init_flags"):  # kmbuf: the queue's own REGISTER shape
            from guest.transports.kmbuf import D_CMD
            req = D_CMD.pack(0, 0, qid, self.engine.init_flags, self.engine.depth, b"")
            return self.raw(P.URING_CMD_REGISTER, req, timeout=2.0)
        iov = (abi.Iovec * 2)(abi.Iovec(self.engine.hdr_addr, P.URING_HDR_SIZE),
                              abi.Iovec(None, 0))
        self.engine.ring.keep(iov)
        return self.raw(P.URING_CMD_REGISTER, S.register(qid), ctypes.addressof(iov), 2,
                        timeout=2.0)
