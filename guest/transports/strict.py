"""The strict server: every field the kernel wrote for a ring request, checked against what
the request itself implies. A mismatch is a finding of the test that saw it (counted, the
first one kept with the request dumped), never tolerated because the server could have read
the value from elsewhere.

RingEngine.on_cqe calls `delivered()` for every request CQE (res >= 0), before the request
is served or held; RingEngine.commit calls `committed()`. The transport says where the kernel
names a request's payload buffer (`buffer_field`: "none", "offset", "buf_id" or "cqe") and
how big each queue's pool is (`buffer_area(qid)`: buffers, bytes each).

What is checked (sources: Linux 7.3.4 fs/fuse/dev_uring.c fuse_uring_args_to_ring,
fuse_uring_req_has_copyable_payload, fuse_uring_select_buffer, can_zero_copy_req; dev.c
fuse_send_one, fuse_get_unique; kmbuf v4 19/25 and 24/25; bufring v2 10/14):
  unique      in_header.unique non-zero and even (FUSE_REQ_ID_STEP 2; a NOTIFY_REPLY carries
              the server's notify_unique: only non-zero); opcode never one that goes through
              /dev/fuse (INIT, FORGET, BATCH_FORGET, INTERRUPT)
  commit_id   == in_header.unique
  payload_sz  == in_header.len - 40 - the op's first in-arg (in-args after the first, a
              zero-copied WRITE's pages included: 7.3 and v4 add them back); WRITE: also ==
              fuse_write_in.size; >= 8 * total_extlen
  flags       0; on a 7.3 zero-copy transport FUSE_URING_ENT_ZERO_COPY exactly on READ/WRITE
              when the server opens files with FOPEN_IO_URING_ZERO_COPY (generations A, B, D
              write no flag)
  reserved    0, and the u32 at 20 per field: padding 0 ("none", "cqe"), offset 0 without a
              buffer ("offset"), buf_id 0 without a buffer and padding 0 ("buf_id")
  buffer      present exactly when the kernel's rule gives the request a buffer (not for
              FLUSH, RELEASE(DIR), FSYNC(DIR), ACCESS, SETLK(W), FALLOCATE, DESTROY, SYNCFS,
              nor a zero-copied READ, nor on a v4 zero-copy queue READ, READDIR(PLUS),
              READLINK); inside the pool (offset buf_size-aligned and the whole buffer inside
              the registered area; ids < buffers); not held by another entry whose request is
              not committed yet (generation D: a payload request without IORING_CQE_F_BUFFER
              uses the buffer its entry kept)
  pool        after every commit: buffers out (held by delivered, uncommitted requests) plus
              buffers free add up to the pool (the kernel's own free map is not visible)
Generation C reports buffer 0 as offset 0, as it reports "no buffer": a no-payload request
that still holds buffer 0 cannot be told apart.
"""

from __future__ import annotations

import struct
import sys
import threading
import weakref
from collections import Counter

from guest.fuse import proto as P
from guest.uring import abi

IN_HDR = struct.Struct("<IIQQIIIHH")  # struct fuse_in_header (40 bytes)
ENT = struct.Struct("<QQIIQ")  # struct fuse_uring_ent_in_out; the u32 at 20 differs per ABI
WRITE_SIZE = struct.Struct("<I")  # fuse_write_in.size, at 16 in op_in
OP_IN = 128  # offsetof(struct fuse_uring_req_header, op_in)
Op = P.Op
READ, WRITE, NOTIFY_REPLY = int(Op.READ), int(Op.WRITE), int(Op.NOTIFY_REPLY)  # plain ints: no enum lookup per request
#: sizeof the first in-arg per opcode, as fs/fuse of 7.3.4 sends it at minor >= 12 (struct
#: sizes compiled from its uapi fuse.h); 0: no args or fuse_set_zero_arg0. SETXATTR: 16 with
#: FUSE_SETXATTR_EXT, else FUSE_COMPAT_SETXATTR_IN_SIZE (xattr.c).
ARG0 = {Op.LOOKUP: 0, Op.GETATTR: 16, Op.SETATTR: 88, Op.READLINK: 0, Op.SYMLINK: 0, Op.MKNOD: 16,
        Op.MKDIR: 8, Op.UNLINK: 0, Op.RMDIR: 0, Op.RENAME: 8, Op.LINK: 8, Op.OPEN: 8, Op.READ: 40,
        Op.WRITE: 40, Op.STATFS: 0, Op.RELEASE: 24, Op.FSYNC: 16, Op.SETXATTR: 8, Op.GETXATTR: 8,
        Op.LISTXATTR: 8, Op.REMOVEXATTR: 0, Op.FLUSH: 24, Op.OPENDIR: 8, Op.READDIR: 40,
        Op.RELEASEDIR: 24, Op.FSYNCDIR: 16, Op.GETLK: 48, Op.SETLK: 48, Op.SETLKW: 48, Op.ACCESS: 8,
        Op.CREATE: 16, Op.BMAP: 16, Op.DESTROY: 0, Op.IOCTL: 32, Op.POLL: 24, Op.NOTIFY_REPLY: 0,
        Op.FALLOCATE: 32, Op.READDIRPLUS: 40, Op.RENAME2: 16, Op.LSEEK: 24, Op.COPY_FILE_RANGE: 56,
        Op.SYNCFS: 8, Op.TMPFILE: 16, Op.STATX: 24, 53: 56}  # 53: FUSE_COPY_FILE_RANGE_64
SETXATTR_EXT = 1 << 29  # fuse_init_out.flags
#: in_numargs <= 1 and no out-args: the kernel never gives these a buffer.
NO_PAYLOAD = frozenset({Op.FLUSH, Op.RELEASE, Op.RELEASEDIR, Op.FSYNC, Op.FSYNCDIR, Op.ACCESS, Op.SETLK,
                        Op.SETLKW, Op.FALLOCATE, Op.DESTROY, Op.SYNCFS})
#: Their only payload is out_pages: zero-copied, they need no buffer (v4 24/25; 7.3: READ).
PAGES_ONLY = frozenset({Op.READ, Op.READDIR, Op.READDIRPLUS, Op.READLINK})
DEVFUSE_ONLY = frozenset({0, Op.INIT, Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT})
WORD = {"none": "padding", "offset": "offset", "buf_id": "buf_id|padding<<16", "cqe": "padding"}
UNKNOWN = -1  # generation D: after an unknown opcode, whether the entry kept its buffer
#: Every Strict made in this process, for the edge scenarios' strict_server case.
_ALL: list[Strict] = []


def mark() -> int:
    """A position in the list of strict servers made so far (see since())."""
    return len(_ALL)


def since(position: int) -> list[Strict]:
    """The strict servers made after mark() returned position."""
    return _ALL[position:]


def has_payload(op: int, zero_copied: bool) -> bool | None:
    """Does the kernel give this request a payload buffer? (fuse_uring_req_has_copyable_payload:
    in-args after the first, or out-args, that are not zero-copied pages); None for an opcode
    whose args the server does not know."""
    if op in NO_PAYLOAD:
        return False
    if op not in ARG0:
        return None
    return not (zero_copied and op in PAGES_ONLY)


class Ledger:
    """One queue's payload buffers as the server sees them: out (buffer -> the entry whose
    request holds it, until that request's commit) and free."""

    __slots__ = ("qid", "nbufs", "size", "out", "free")

    def __init__(self, qid: int, nbufs: int, size: int) -> None:
        self.qid, self.nbufs, self.size = qid, nbufs, size
        self.out: dict[int, int] = {}
        self.free = set(range(nbufs))


class Strict:
    """The checks of one ring engine (see the module docstring); `report()` for the counters."""

    def __init__(self, engine) -> None:  # noqa: ANN001 - a RingEngine (no import: no circle)
        self.eng = weakref.proxy(engine)  # the registry below must not keep engines (and their memory) alive
        self.name = engine.name
        self.field = getattr(engine, "buffer_field", "none")
        self.arg0 = dict(ARG0)
        if engine.init.reply_flags & SETXATTR_EXT:
            self.arg0[Op.SETXATTR] = 16
        #: generation D zero-copies per queue (can_zero_copy_req: use_zero_copy and pages)
        self.zc_queue = bool(engine.zero_copy and self.field == "cqe")
        #: 7.3 zero-copies per request and says so in ent_in_out.flags
        self.zc_flag = bool(engine.zero_copy and self.field == "offset")
        self.lock = threading.RLock()  # SIGUSR1 writes the counters (report()) from the serving thread
        self.checked = 0
        self.kinds: Counter = Counter()
        self.first: str | None = None
        self.ledgers: dict[int, Ledger] = {}  # qid -> its pool as the server sees it
        self.held: dict[int, tuple[Ledger, int]] = {}  # gid -> (ledger, buffer) until its commit
        self.kept: dict[int, int | None] = {}  # gid -> buffer the kernel left the entry (D)
        _ALL.append(self)

    # -- per request --------------------------------------------------------------------------
    def delivered(self, e, cflags: int, req: tuple | None = None) -> None:  # noqa: ANN001 - an engine Entry
        """A request landed in entry e (cflags: its CQE's flags): check every field. req: the
        14 values of its header (P.URING_REQ) as the engine read them to serve the request;
        None: read them here."""
        with self.lock:
            try:
                self._delivered(e, cflags, req)
            except Exception as exc:  # noqa: BLE001 - a harness bug must show, not pass
                self._record(e, cflags, [("strict_error", f"strict check crashed: {exc!r}")])

    def _delivered(self, e, cflags: int, req: tuple | None) -> None:  # noqa: ANN001
        if req is None:
            req = P.URING_REQ.unpack_from(self.eng.hdr_of(e), e.hdr_off)
        hlen, op, unique, _, _, _, _, extlen, _, flags, cid, psz, word, reserved = req
        self.checked += 1
        bad: list[tuple[str, str]] = []
        if unique == 0 or (unique & 1 and op != NOTIFY_REPLY):
            bad.append(("unique", f"in_header.unique {unique:#x} is zero or odd"))
        if op in DEVFUSE_ONLY:
            bad.append(("opcode", f"opcode {op} ({P.op_name(op)}) never travels over the ring"))
        if cid != unique:
            bad.append(("commit_id", f"commit_id {cid:#x} != in_header.unique {unique:#x}"))
        if reserved:
            bad.append(("reserved", f"ent_in_out.reserved {reserved:#x} != 0"))
        n0 = self.arg0.get(op)
        if n0 is None:
            if psz > hlen - IN_HDR.size:
                bad.append(("payload_sz", f"payload_sz {psz} > in_header.len {hlen} - 40"))
        elif psz != hlen - IN_HDR.size - n0:
            bad.append(("payload_sz", f"payload_sz {psz} != in_header.len {hlen} - 40 - "
                                      f"first in-arg {n0} = {hlen - IN_HDR.size - n0}"))
        if op == WRITE:
            (size,) = WRITE_SIZE.unpack_from(self.eng.hdr_of(e), e.hdr_off + OP_IN + 16)
            if psz != size:
                bad.append(("payload_sz", f"WRITE payload_sz {psz} != fuse_write_in.size {size}"))
        if extlen * 8 > psz:
            bad.append(("payload_sz", f"payload_sz {psz} < total_extlen {extlen} * 8"))
        if self.zc_flag:
            zc = self._zc_flag(op, flags, bad)
        else:  # A, B, D write .flags = 0
            if flags:
                bad.append(("flags", f"ent_in_out.flags {flags:#x} != 0"))
            zc = self.zc_queue
        if self.field != "none" or word:
            self._buffer(e, op, word, cflags, has_payload(op, zc), bad)
        if bad:
            self._record(e, cflags, bad)

    def _zc_flag(self, op: int, flags: int, bad: list) -> bool:
        """7.3: FUSE_URING_ENT_ZERO_COPY exactly on READ/WRITE of a zero-copy file (the queues
        are zero-copy); True when set."""
        want = bool(op in (READ, WRITE) and self.eng.server.open_flags & P.FOPEN_IO_URING_ZERO_COPY)
        if flags & ~P.URING_ENT_ZERO_COPY:
            bad.append(("flags", f"ent_in_out.flags {flags:#x}: unknown bits"))
        got = bool(flags & P.URING_ENT_ZERO_COPY)
        if got != want:
            why = ("zero-copy READ/WRITE of a file opened with FOPEN_IO_URING_ZERO_COPY"
                   if want else "not a READ/WRITE of a file opened with FOPEN_IO_URING_ZERO_COPY")
            bad.append(("flags", f"FUSE_URING_ENT_ZERO_COPY {'missing' if want else 'set'}: {why}"))
        return got

    def _buffer(self, e, op: int, word: int, cflags: int, want: bool | None, bad: list) -> None:  # noqa: ANN001
        """Check the buffer the kernel named against want (has_payload) and the pool."""
        field, gid, q = self.field, e.gid, e.qid
        self._release(gid)  # a new request in e: its last one was committed
        if field == "none":
            if word:
                bad.append(("padding", f"ent_in_out u32 at 20 is {word:#x}, not 0"))
            return
        led = self.ledger(q)
        nbufs, size = led.nbufs, led.size
        bid: int | None = None
        if field == "offset":
            if want is False or (want is None and word == 0):
                if word:
                    bad.append(("buffer", f"offset {word} on {P.op_name(op)}, which has no payload"))
                return
            if word % size or word + size > nbufs * size:
                bad.append(("buffer_range", f"offset {word} is not a whole buffer of "
                                            f"{size} bytes inside the {nbufs * size}-byte pool"))
                return
            bid = word // size
        elif field == "buf_id":
            bid, pad = word & 0xFFFF, word >> 16
            if pad:
                bad.append(("padding", f"ent_in_out padding {pad:#x} != 0"))
            if want is False or (want is None and bid == 0):
                if bid:
                    bad.append(("buffer", f"buf_id {bid} on {P.op_name(op)}, which has no payload"))
                return
        else:  # "cqe"
            if word:
                bad.append(("padding", f"ent_in_out u32 at 20 is {word:#x}, not 0"))
            sel = cflags & abi.CQE_F_BUFFER
            if want is False:
                self.kept[gid] = None  # the kernel recycles it on a request without payload
                if sel:
                    bad.append(("buffer", f"IORING_CQE_F_BUFFER (id {cflags >> abi.CQE_BUFFER_SHIFT}) "
                                          f"on {P.op_name(op)}, which has no payload"))
                return
            if sel:
                bid = cflags >> abi.CQE_BUFFER_SHIFT
            elif want is None:  # an opcode the server does not know: what the entry keeps is unknown
                self.kept[gid] = UNKNOWN
                return
            else:
                bid = self.kept.get(gid)
                if bid == UNKNOWN:
                    return
                if bid is None:
                    bad.append(("buffer", f"{P.op_name(op)} has a payload but no IORING_CQE_F_BUFFER, "
                                          "and its entry kept no buffer"))
                    return
        if bid >= nbufs:
            bad.append(("buffer_range", f"buffer {bid} >= the pool's {nbufs} buffers"))
            return
        self._take(led, bid, gid, bad)

    def _take(self, led: Ledger, bid: int, gid: int, bad: list) -> None:
        other = led.out.get(bid)
        if other is not None and other != gid:
            bad.append(("buffer_shared", f"buffer {bid} of queue {led.qid} is still held by entry "
                                         f"{other}, whose request is not committed"))
            self.held.pop(other, None)
        led.free.discard(bid)
        led.out[bid] = gid
        self.held[gid] = (led, bid)
        if self.field == "cqe":
            self.kept[gid] = bid

    def ledger(self, q: int) -> Ledger:
        """Queue q's ledger (made at first use from the transport's buffer_area)."""
        led = self.ledgers.get(q)
        if led is None:
            led = self.ledgers[q] = Ledger(q, *self.eng.buffer_area(q))
        return led

    def _release(self, gid: int) -> Ledger | None:
        led, bid = self.held.pop(gid, (None, 0))
        if led is not None and led.out.get(bid) == gid:
            del led.out[bid]
            led.free.add(bid)
        return led

    def committed(self, e) -> None:  # noqa: ANN001
        """Entry e's reply goes to the kernel: its buffer is no longer held by the server; the
        queue's buffers out plus free must still be the pool."""
        with self.lock:
            led = self._release(e.gid)
            if led is not None and len(led.out) + len(led.free) != led.nbufs:
                self._record(e, e.cflags, [("pool_sum", f"after the commit queue {led.qid} has "
                                                        f"{len(led.out)} buffers out + {len(led.free)} "
                                                        f"free != {led.nbufs}")])

    # -- findings -----------------------------------------------------------------------------
    def _record(self, e, cflags: int, bad: list[tuple[str, str]]) -> None:  # noqa: ANN001
        for kind, _ in bad:
            self.kinds[kind] += 1
        if self.first is None or sum(self.kinds.values()) <= 5:
            try:
                text = self.dump(e, cflags, bad)
            except Exception as exc:  # noqa: BLE001 - the finding stands without its dump
                text = "; ".join(f"[{k}] {t}" for k, t in bad) + f" (no dump: {exc!r})"
            if self.first is None:
                self.first = text
            print(f"strict: {text}", file=sys.stderr, flush=True)

    def dump(self, e, cflags: int, bad: list[tuple[str, str]]) -> str:  # noqa: ANN001
        """One line: what failed, then the request's headers as the kernel wrote them."""
        hdr, base = self.eng.hdr_of(e), e.hdr_off
        h = IN_HDR.unpack_from(hdr, base)
        flags, cid, psz, word, reserved = ENT.unpack_from(hdr, base + P.URING_ENT_OFFSET)
        op_in = bytes(hdr[base + OP_IN:base + OP_IN + min(64, self.arg0.get(h[1]) or 64)])
        return (f"{self.name} queue {e.qid} entry {e.idx}: {P.op_name(h[1])} "
                + "; ".join(f"[{k}] {t}" for k, t in bad)
                + f" | in_header len={h[0]} opcode={h[1]} unique={h[2]:#x} nodeid={h[3]} uid={h[4]}"
                  f" gid={h[5]} pid={h[6]} total_extlen={h[7]} | ent_in_out flags={flags:#x} "
                  f"commit_id={cid:#x} payload_sz={psz} {WORD[self.field]}={word:#x} "
                  f"reserved={reserved:#x} | cqe flags={cflags:#x} | op_in {op_in.hex()}")

    @property
    def violations(self) -> int:
        return sum(self.kinds.values())

    def report(self) -> dict:
        """JSON view: requests checked, findings by kind, the first one dumped."""
        with self.lock:
            return {"checked": self.checked, "violations": self.violations,
                    "kinds": dict(self.kinds), "first": self.first, "transport": self.name}

    def summary(self) -> str:
        """One line for a KTAP diagnostic."""
        r = self.report()
        if not r["violations"]:
            return f"{r['transport']}: {r['checked']} ring requests, every field as the request implies"
        return (f"{r['transport']}: {r['violations']} mismatch(es) in {r['checked']} ring requests "
                f"{r['kinds']}; first: {r['first']}")
