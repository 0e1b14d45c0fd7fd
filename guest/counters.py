"""Counters of what the server really did, written as JSON (schema below).

Thread-safe increments; `write()` is atomic (temp file + os.replace).
Schema (version 1), all keys always present:
  transport_requested, transport_used ("io_uring" | "devfuse" | "none"),
  fallback (bool), setup_error (null or {"step", "errno", "message"}),
  generation ("A" | "B" | "C" | "D" | null), init {kernel_minor, negotiated_minor,
  kernel_flags, kernel_flags2, offered {over_io_uring, has_bufpool, max_pages},
  reply_flags, reply_flags2, max_write, max_pages},
  uring {enabled, ready, nr_queues, queue_depth, max_payload_sz, pool_bufs,
  registered, zero_copy}, paths {io_uring, devfuse}, per_queue {qid: n},
  per_opcode {NAME: n}, rw {READ: {bytes, direct_io, direct_io_bytes, o_direct, o_direct_bytes},
  WRITE: {the same, write_cache, write_cache_bytes}} (see Counters.request),
  zero_copy {read, write, bytes, fixed_errors},
  pool {high_water, distinct_offsets, per_queue_high_water {qid: n}} (kmbuf: buffer ids),
  kmbuf {selected, kept, unexpected, missing, ids {qid: [buffer ids seen]}} (generation D),
  bufring {payload, no_payload, kept, waited, shared, unexpected, bad_id,
  ids {qid: [buffer ids seen]}} (generation B, see guest/transports/bufring.py),
  errors {cqe {ERRNO: n}, cqe_total, teardown_cqe {ERRNO: n}, handler {ERRNO: n},
  malformed, exceptions}, strict {checked, violations, kinds {KIND: n}, first, transport}
  (ring requests the strict server checked, see guest/transports/strict.py; first: the first
  mismatch with its request dumped, or null), pid, uid, started, updated, exit_reason.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import time
from collections import Counter

from guest.fuse.proto import Op, op_name

READ, WRITE = int(Op.READ), int(Op.WRITE)
#: fuse_read_in / fuse_write_in (40 bytes): size at 16, read_flags/write_flags at 20, the open
#: flags at 32 (guest.fuse.proto READ_IN, WRITE_IN).
RW_IN = struct.Struct("<16xII8xI4x")
#: fuse_write_in.write_flags bit: a write-back of dirty page cache (fs/fuse/file.c
#: fuse_writepage_args_fill; this server never asks for FUSE_WRITEBACK_CACHE, so only the pages
#: a shared writable mmap dirtied).
FUSE_WRITE_CACHE = 1 << 0
#: FUSE_READ_LOCKOWNER / FUSE_WRITE_LOCKOWNER (both bit 1): set by fuse_send_read and
#: fuse_send_write, whose only caller is fuse_direct_io (owner = current->files, 7.3.4
#: fs/fuse/file.c): a request of an O_DIRECT or FOPEN_DIRECT_IO call, no page cache in between.
#: Page-cache READs (readahead, read_folio) and WRITEs (fuse_perform_write, write-back) never set it.
LOCKOWNER = 1 << 1
O_DIRECT = getattr(os, "O_DIRECT", 0)  # the flag's value differs per architecture: the guest's own

def errno_name(code: int) -> str:
    """ENOTCONN for 107 (sign ignored)."""
    name = errno.errorcode.get(abs(code))
    return name if name is not None else f"E{abs(code)}"


class Counters:
    """All server statistics; `snapshot()` gives the JSON document."""

    def __init__(self, requested: str) -> None:
        self._lock = threading.RLock()  # SIGUSR1 may write mid-update
        self.doc: dict = {
            "schema": 1, "transport_requested": requested, "transport_used": "none",
            "fallback": False, "setup_error": None, "generation": None, "init": {},
            "uring": {"enabled": False, "ready": False, "nr_queues": 0, "queue_depth": 0,
                      "max_payload_sz": 0, "pool_bufs": 0, "registered": False,
                      "zero_copy": False},
            "pid": os.getpid(), "uid": os.geteuid(), "started": time.time(),
            "updated": None, "exit_reason": None,
        }
        #: (path, opcode or its name, qid or None) -> requests served: one increment per request;
        #: paths, per_queue and per_opcode add it up
        self.requests: Counter = Counter()
        self.zc: Counter = Counter()
        self.cqe_errors: Counter = Counter()
        self.teardown: Counter = Counter()
        self.handler_errors: Counter = Counter()
        #: "READ"/"WRITE" -> {bytes, o_direct, o_direct_bytes, write_cache, write_cache_bytes}
        self.rw: dict[str, Counter] = {"READ": Counter(), "WRITE": Counter()}
        self.malformed = 0
        self.exceptions = 0
        self._held: dict[int, set[int]] = {}
        self.pool_hw: Counter = Counter()
        self.offsets: set[tuple[int, int]] = set()
        #: per ring-buffer family ("kmbuf", "bufring"): event counts and buffer ids per queue
        self.ring_bufs: dict[str, Counter] = {"kmbuf": Counter(), "bufring": Counter()}
        self.ring_buf_ids: dict[str, dict[int, set[int]]] = {"kmbuf": {}, "bufring": {}}
        self.strict = None  # the ring engine's strict server (guest.transports.strict.Strict)

    def request(self, path: str, op: int | str, qid: int | None = None, arg0: bytes = b"") -> None:
        """Count one request served over `path` ("io_uring" or "devfuse"); op: its opcode (named
        when the counters are read) or its name. arg0: its first in-arg; for READ and WRITE (the
        40-byte fuse_read_in / fuse_write_in) rw adds up its `size` field in bytes: all
        (`bytes`), those of fuse_direct_io (`direct_io`: LOCKOWNER in read_flags/write_flags),
        of them those whose `flags` (the file's f_flags: fs/fuse/file.c fuse_read_args_fill,
        fuse_write_flags) hold O_DIRECT (`o_direct`), and WRITEs whose write_flags hold
        FUSE_WRITE_CACHE (`write_cache`), each as a request count and `<name>_bytes`."""
        with self._lock:
            self.requests[path, op, qid] += 1
            if op in (READ, WRITE) and len(arg0) >= RW_IN.size:
                size, rw_flags, flags = RW_IN.unpack_from(arg0)
                c = self.rw["READ" if op == READ else "WRITE"]
                c["bytes"] += size
                if rw_flags & LOCKOWNER:
                    c["direct_io"] += 1
                    c["direct_io_bytes"] += size
                    if flags & O_DIRECT:
                        c["o_direct"] += 1
                        c["o_direct_bytes"] += size
                if op == WRITE and rw_flags & FUSE_WRITE_CACHE:
                    c["write_cache"] += 1
                    c["write_cache_bytes"] += size

    def _sum_requests(self, key: int) -> Counter:
        """self.requests added up by one part of its keys (0 path, 1 opcode name, 2 qid)."""
        out: Counter = Counter()
        with self._lock:
            for k, n in self.requests.items():
                part = k[key] if key != 1 or isinstance(k[1], str) else op_name(k[1])
                if part is not None:
                    out[part] += n
        return out

    @property
    def paths(self) -> Counter:
        """Requests per path ("io_uring", "devfuse")."""
        return self._sum_requests(0)

    @property
    def per_opcode(self) -> Counter:
        """Requests per opcode name."""
        return self._sum_requests(1)

    @property
    def per_queue(self) -> Counter:
        """io_uring requests per queue id."""
        return self._sum_requests(2)

    def cqe_error(self, res: int, teardown: bool = False) -> None:
        """Count a negative CQE result (teardown ones separately)."""
        with self._lock:
            (self.teardown if teardown else self.cqe_errors)[errno_name(res)] += 1

    def handler_error(self, code: int) -> None:
        """Count an errno returned to the kernel by a handler (not a failure)."""
        with self._lock:
            self.handler_errors[errno_name(code)] += 1

    def bump(self, kind: str, key: str, n: int = 1) -> None:
        """Add n to zero_copy[key] (kind "zc"), malformed, or exceptions."""
        with self._lock:
            if kind == "zc":
                self.zc[key] += n
            elif kind == "exception":
                self.exceptions += n
            else:
                self.malformed += n

    def kmbuf_event(self, event: str, qid: int, bid: int | None) -> None:
        """A kmbuf request CQE: its buffer was `selected` (IORING_CQE_F_BUFFER), `kept` from
        the entry's last request, `unexpected` (a buffer on a request without payload) or
        `missing` (a payload request with no buffer id known)."""
        self.buffer_event("kmbuf", event, qid, bid)

    def buffer_event(self, family: str, event: str, qid: int, bid: int | None) -> None:
        """Count `event` of a kernel-chosen ring buffer (family "kmbuf" or "bufring") and
        remember buffer id `bid` of queue qid as seen."""
        with self._lock:
            self.ring_bufs[family][event] += 1
            if bid is not None:
                ids = self.ring_buf_ids[family]
                seen = ids.get(qid)
                if seen is None:
                    seen = ids[qid] = set()
                seen.add(bid)

    def _ring_buf_doc(self, family: str, events: tuple[str, ...]) -> dict:
        ids = self.ring_buf_ids[family]
        return {**{k: self.ring_bufs[family][k] for k in events},
                "ids": {str(q): sorted(v) for q, v in sorted(ids.items())}}

    def pool_take(self, qid: int, offset: int) -> None:
        """A request holding pool buffer `offset` of queue qid was delivered."""
        with self._lock:
            held = self._held.get(qid)
            if held is None:
                held = self._held[qid] = set()
            held.add(offset)
            self.offsets.add((qid, offset))
            if len(held) > self.pool_hw[qid]:
                self.pool_hw[qid] = len(held)

    def pool_release(self, qid: int, offset: int) -> None:
        """The request holding `offset` was committed."""
        with self._lock:
            held = self._held.get(qid)
            if held is not None:
                held.discard(offset)

    def snapshot(self) -> dict:
        """The full JSON document."""
        with self._lock:
            doc = dict(self.doc)
            paths = self.paths
            doc["paths"] = {"io_uring": paths["io_uring"], "devfuse": paths["devfuse"]}
            doc["per_queue"] = {str(k): v for k, v in sorted(self.per_queue.items())}
            doc["per_opcode"] = dict(sorted(self.per_opcode.items()))
            doc["rw"] = {op: {k: c[k] for k in ("bytes", "direct_io", "direct_io_bytes", "o_direct",
                                                "o_direct_bytes")
                              + (("write_cache", "write_cache_bytes") if op == "WRITE" else ())}
                         for op, c in self.rw.items()}
            doc["zero_copy"] = {"read": self.zc["read"], "write": self.zc["write"],
                                "bytes": self.zc["bytes"],
                                "fixed_errors": self.zc["fixed_errors"],
                                "staged": self.zc["staged"]}
            doc["kmbuf"] = self._ring_buf_doc("kmbuf", ("selected", "kept", "unexpected", "missing"))
            doc["bufring"] = self._ring_buf_doc("bufring", ("payload", "no_payload", "kept", "waited",
                                                            "shared", "unexpected", "bad_id"))
            doc["pool"] = {"high_water": max(self.pool_hw.values(), default=0),
                           "distinct_offsets": len(self.offsets),
                           "per_queue_high_water": {str(k): v for k, v in
                                                    sorted(self.pool_hw.items())}}
            doc["errors"] = {"cqe": dict(self.cqe_errors),
                             "cqe_total": sum(self.cqe_errors.values()),
                             "teardown_cqe": dict(self.teardown),
                             "handler": dict(self.handler_errors),
                             "malformed": self.malformed,
                             "exceptions": self.exceptions}
            doc["strict"] = self.strict.report() if self.strict is not None else {
                "checked": 0, "violations": 0, "kinds": {}, "first": None, "transport": None}
            doc["updated"] = time.time()
            uring_n = paths["io_uring"]
            if doc["uring"]["ready"] and uring_n:
                doc["transport_used"] = "io_uring"
            elif paths["devfuse"] or not doc["uring"]["ready"]:
                doc["transport_used"] = "devfuse"
            return doc

    def write(self, path: str | None) -> None:
        """Atomically write the snapshot to path (no-op without a path)."""
        if not path:
            return
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
