"""Background batches larger than max_background, submitted once, no refill (BG).

A missing dispatch of the background queue when a request completes (the upstream "background
queue dispatch on request completion" bug) does not show under readahead or fio at iodepth 32:
they keep submitting, and each arrival flushes the queue too. These cases submit one batch of
PAGES requests against max_background MAX_BG and then only wait.

How 7.3.4 dispatches background requests over io-uring (read, fs/fuse/dev_uring.c, dev.c):

- arrival, fuse_uring_queue_bq_req (dev_uring.c:1859-1867): the request goes to the queue's
  `fuse_req_bg_queue`, `fch->num_background++`, `if (fch->num_background ==
  fch->max_background) fch->blocked = 1;`, then `fuse_uring_flush_bg(queue)`;
- fuse_uring_flush_bg (dev_uring.c:109-111) moves requests to the dispatch list only
  `while ((fch->active_background < fch->max_background || !queue->active_background) &&
  (!list_empty(&queue->fuse_req_bg_queue)))`;
- completion, fuse_uring_req_end (dev_uring.c:162-166): `queue->active_background--;
  ... fuse_request_bg_finish(fch, req); fuse_uring_flush_bg(queue);`. This is the flush the
  bug drops. (fuse_request_end, dev.c:655-657, flushes only the legacy queue, and only while
  FR_BACKGROUND is still set, which fuse_request_bg_finish has already cleared.)

Which workload needs the completion flush, by reading:

- writeback_batch_over_max_background: msync(MS_SYNC) of PAGES dirty pages of a shared mapping.
  fuse_writepages (file.c, WB_SYNC_ALL ignores the congestion threshold) sends one WRITE per
  page here (max_pages 1: `if (ap->num_folios >= fc->max_pages) return true;`,
  fuse_folios_need_send), each through fuse_send_writepage with `args->force = true;`
  (file.c:1975) and fuse_simple_background (req.c) -> fuse_chan_send_bg (dev.c:903); a forced
  request is allocated with fuse_request_alloc, never waiting in fuse_get_req (dev.c:907-911).
  So all PAGES arrive in one go: MAX_BG are moved to the dispatch list, the rest stay on
  fuse_req_bg_queue (fch->active_background == max_background and the queue's own
  active_background is not 0), and nothing arrives after them: only the completion flush
  moves them (or an abort, dev_uring.c:212, or a later background arrival on that queue,
  1867; neither happens here). Without it msync waits for ever. What this detects is the flush
  missing from fuse_uring_req_end; a flush placed before the decrement would move requests
  one completion late and not stall.
- aio_batch_over_max_background: one io_submit of PAGES O_DIRECT reads (raw Linux AIO, with
  FUSE_ASYNC_DIO). These are not forced: fuse_async_req_send -> fuse_simple_background ->
  fuse_get_req(fch, true), which waits while `(for_background && fch->blocked)` (dev.c:94,
  121-126). So io_submit itself sleeps once MAX_BG are in flight, and is woken by
  fuse_request_bg_finish (`fch->blocked = 0; wake_up(&fch->blocked_waitq);`, dev.c:607-609)
  when one completes; each later request is then flushed by its own arrival. This batch does
  not need the completion flush (a kernel without it still passes here); it proves the wake-up
  of a submitter held back at max_background, which is also only on the completion path.

Path proof of both (`not exercised: ...` otherwise): the server holds MAX_BG requests of the
batch, nothing more arrives for SETTLE s while it holds them, and fusectl's `waiting` (the
kernel's count of requests in flight, num_waiting) exceeds what the server holds: the rest
were kept back by the kernel. Then the server answers as requests come: every request of the
batch must reach it and the client must finish within BOUND s, with its data intact, never
more than MAX_BG + nr_queues - 1 outstanding at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import struct
import time

from guest import mount as M
from guest.edge import time_scale
from guest.edge.clients import Client
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.uring import syscall
from guest.uring.ring import addr_of

MAX_BG = 4
PAGES = 32
PAGE = mmap.PAGESIZE
SETTLE = 1.0  # s (x the time scale) the server sits on MAX_BG held requests
BOUND = 20.0  # s (x the time scale) for the rest of the batch once the server answers
OLD = b"".join(bytes([(i * 7 + 1) & 0xFF]) * PAGE for i in range(PAGES))  # every page differs
NEW = b"".join(bytes([(i * 13 + 5) & 0xFF]) * PAGE for i in range(PAGES))
#: (io_setup, io_submit, io_getevents) per machine (x86_64 syscall_64.tbl; asm-generic unistd.h).
AIO_NR = {"x86_64": (206, 209, 208), "aarch64": (0, 2, 4), "riscv64": (0, 2, 4)}
#: struct iocb (include/uapi/linux/aio_abi.h, little endian): aio_data, aio_key, aio_rw_flags,
#: aio_lio_opcode, aio_reqprio, aio_fildes, aio_buf, aio_nbytes, aio_offset, aio_reserved2,
#: aio_flags, aio_resfd; struct io_event: data, obj, res, res2.
IOCB, IO_EVENT = struct.Struct("<QIiHhIQQqQII"), struct.Struct("<QQqq")
IOCB_CMD_PREAD = 0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sys(nr: int, *args: int) -> int:
    return syscall.check(syscall.libc().syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)),
                         f"syscall {nr}")


def aio_batch(path: str) -> dict:
    """Client body: one io_submit of PAGES O_DIRECT reads of PAGE bytes (page i at offset
    i * PAGE), then io_getevents until all PAGES completed. Returns what io_submit took
    (submitted, seconds), the completions whose res was not PAGE, and the sha of the pages."""
    nr_setup, nr_submit, nr_getevents = AIO_NR[os.uname().machine]
    aio_ctx = ctypes.c_ulong(0)
    _sys(nr_setup, PAGES, ctypes.addressof(aio_ctx))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, PAGES * PAGE)
    iocbs = ctypes.create_string_buffer(IOCB.size * PAGES)
    for i in range(PAGES):
        IOCB.pack_into(iocbs, i * IOCB.size, i, 0, 0, IOCB_CMD_PREAD, 0, fd, addr_of(buf) + i * PAGE, PAGE,
                       i * PAGE, 0, 0, 0)
    ptrs = (ctypes.c_void_p * PAGES)(*(ctypes.addressof(iocbs) + i * IOCB.size for i in range(PAGES)))
    t0 = time.monotonic()
    submitted = _sys(nr_submit, aio_ctx.value, PAGES, ctypes.addressof(ptrs))
    took = time.monotonic() - t0
    events = ctypes.create_string_buffer(IO_EVENT.size * PAGES)
    got = 0
    while got < submitted:
        got += _sys(nr_getevents, aio_ctx.value, 1, submitted - got,
                    ctypes.addressof(events) + got * IO_EVENT.size, 0)
    bad = [(d, r) for d, _, r, _ in (IO_EVENT.unpack_from(events, i * IO_EVENT.size) for i in range(got)) if r != PAGE]
    return {"submitted": submitted, "io_submit_s": round(took, 3), "bad": bad[:4], "sha": _sha(bytes(buf))}


def dirty_and_msync(path: str) -> float:
    """Client body: map path shared, write NEW over its PAGES pages (the faults read them in),
    msync(MS_SYNC); the seconds msync took."""
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, PAGES * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[:] = NEW
            t0 = time.monotonic()
            m.flush()
            return round(time.monotonic() - t0, 3)
    finally:
        os.close(fd)


def _batch(ctx: Ctx, srv: Served, c: Client, op: str, bound: int) -> dict:
    """Hold every `op` until MAX_BG are held and SETTLE s passed; then answer them as they
    come until the client ends or BOUND s pass. Counts for the verdict."""
    eng = srv.engine
    minor = M.minor_of(srv.mnt)
    n0 = len(eng.log)
    eng.auto, eng.hold = True, (lambda i: i["op"] == op)
    srv.pump(min(30.0 * time_scale(), ctx.left()), lambda: len(eng.held) >= MAX_BG or c.done())
    arrived = sum(i["op"] == op for i in eng.log[n0:])
    srv.pump(min(SETTLE * time_scale(), ctx.left()))
    st = {"held": len(eng.held), "late": sum(i["op"] == op for i in eng.log[n0:]) - arrived,
          "waiting": M.waiting(minor), "done_early": c.done()}
    most, end = st["held"], time.monotonic() + min(BOUND * time_scale(), ctx.left())
    while not c.done() and time.monotonic() < end:
        srv.pump(0.0)
        most = max(most, len(eng.held))
        for e in list(eng.held):
            eng.answer(e)
        time.sleep(0.002)
    st.update(stalled_waiting=None if c.done() else M.waiting(minor))
    eng.hold = None
    for e in list(eng.held):
        eng.answer(e)
    srv.pump(min(2.0, ctx.left()), c.done)
    st.update(most=most, seen=sum(i["op"] == op for i in eng.log[n0:]), out=c.poll(0.0))
    return st


def _proof(st: dict, op: str, bound: int) -> str:
    """'' when the batch really went over max_background, else what was not exercised."""
    if st["held"] < MAX_BG:
        return f"not exercised: only {st['held']} {op}s outstanding at the server, never max_background {MAX_BG}"
    if st["done_early"]:
        return "not exercised: the client finished while the server still held the first requests"
    if st["waiting"] is None or st["waiting"] <= st["held"]:
        return (f"not exercised: fusectl waiting {st['waiting']} while the server held {st['held']}: no "
                "request was kept back by the kernel")
    if st["held"] > bound or st["late"]:
        return (f"the kernel sent {st['held']} at once ({st['late']} after the first {MAX_BG}): more than "
                f"max_background {MAX_BG} (+ one per other queue)")
    return ""


def _verdict(ctx: Ctx, case: str, what: str, st: dict, op: str, bound: int, intact: bool) -> None:
    out = st["out"]
    proof = _proof(st, op, bound)
    stalled = out is None
    ok = not proof and not stalled and bool(out.get("ok")) and intact and st["seen"] >= PAGES and st["most"] <= bound
    ctx.result(case, ok, f"{what}, max_background {MAX_BG}: held {st['held']} for {SETTLE * time_scale():.1f} s "
               f"with fusectl waiting {st['waiting']}" + (f" ({proof})" if proof else " (the rest kept back)")
               + f"; then {st['seen']} {op}s reached the server (want {PAGES}), at most {st['most']} outstanding "
               f"(bound {bound}); " + (f"STALLED: the client still waits after {BOUND * time_scale():.0f} s, "
                                       f"fusectl waiting {st['stalled_waiting']}" if stalled else
                                       f"client {str(out)[:160]}, data {'intact' if intact else 'WRONG'}"))


def writeback_batch(ctx: Ctx, transport: str) -> None:
    """Case writeback_batch_over_max_background (see the module docstring)."""
    srv = Served(ctx, "bgwb", transport=transport, queue_depth=8, pool_bufs=16, max_write=4096, max_pages=1,
                 max_background=MAX_BG, files={b"wb": OLD})
    bound = MAX_BG + srv.conn.nr_queues - 1
    c = Client(ctx, "msync", lambda: dirty_and_msync(srv.path("wb")), cpu=0)
    st = _batch(ctx, srv, c, "WRITE", bound)
    ino = srv.fs.lookup(P.ROOT_ID, b"wb").ino
    intact = srv.fs.read(ino, ino, 0, len(NEW) + 1) == NEW
    _verdict(ctx, "writeback_batch_over_max_background", f"msync of {PAGES} dirty shared pages (one WRITE each)",
             st, "WRITE", bound, intact)
    srv.conn.abort()


def aio_batch_case(ctx: Ctx, transport: str) -> None:
    """Case aio_batch_over_max_background (see the module docstring)."""
    if os.uname().machine not in AIO_NR:
        ctx.result("aio_batch_over_max_background", False, f"no AIO syscall numbers for {os.uname().machine}")
        return
    srv = Served(ctx, "bgaio", transport=transport, queue_depth=8, pool_bufs=16, max_write=4096, max_pages=1,
                 max_background=MAX_BG, init_flags=P.ASYNC_DIO, files={b"aio": OLD})
    bound = MAX_BG + srv.conn.nr_queues - 1
    c = Client(ctx, "aio", lambda: aio_batch(srv.path("aio")), cpu=0)
    st = _batch(ctx, srv, c, "READ", bound)
    v = (st["out"] or {}).get("value") or {}
    intact = v.get("submitted") == PAGES and not v.get("bad") and v.get("sha") == _sha(OLD)
    _verdict(ctx, "aio_batch_over_max_background", f"one io_submit of {PAGES} O_DIRECT 4 KiB reads",
             st, "READ", bound, intact)
    srv.conn.abort()
