"""Background requests over the ring (issue class "background accounting", BG).

Readahead and asynchronous direct I/O are background requests: the kernel counts them
against the INIT reply's max_background and, over io-uring, hands them to entries as the
limit allows (fuse_uring_flush_bg, fs/fuse/dev_uring.c: at most max_background active, plus
one per queue that has none). The connection here asks for max_background 4 and 16 KiB
requests (max_pages 4), and the server answers each READ only after DELAY (a slow backend),
so requests pile up if the kernel sends them in parallel. Its queues have 8 entries each
and, over a pool transport, 8 payload buffers each, so nothing on the server's side caps
READs at 4: only the kernel's limit does (with the default 4 buffers the pool transports
could not show a kernel that ignored it). Two clients, one after the other: a buffered
sequential read of SIZE bytes (readahead), and FIO_IOS fio libaio O_DIRECT 4 KiB random
reads at iodepth 32 (FUSE_ASYNC_DIO negotiated). For each: the data intact (fio: every read
done); READs filling max_background (each arriving with MAX_BG - 1 others outstanding at the
server) at least MIN_FULL times, else "not exercised": the limit was not what held the client
back; never more outstanding than the bound above; and no stall: between the client's first
and last READ the server is never left with nothing to answer for longer than STALL.

Sizes: the 7.3.4 runs of 8 MiB (631 READs) and of 512 fio reads held 4 at once on every ring
transport; 2 MiB is then ~160 READs, 16 readahead windows at the default 128 KiB. Each READ
that arrives while the other 3 are held fills the limit; should the server answer them in
waves of 4, one READ in 4 does: ~40 and 32, against MIN_FULL 8. The KTAP line prints the
count. These two keep submitting, so a missing dispatch at completion never shows in them:
the batches submitted once (guest/edge/bgbatch.py) run first, on mounts of their own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time

from guest.edge import bgbatch, time_scale
from guest.edge.clients import Client
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P

MAX_BG = 4
DELAY = 0.02  # s the server sits on each READ
STALL = 2.0  # s (x the time scale) without a READ to answer while the client waits
SIZE = 2 << 20  # bytes of each file: the readahead reads all of it
FIO_IOS = 128  # 4 KiB fio reads: the first FIO_IOS * 4 KiB of its file, each block once
MIN_FULL = 2 * MAX_BG  # READs that must each fill max_background (arrive with MAX_BG - 1 held)


def page_pattern(size: int) -> bytes:
    """size bytes where byte i is (i * 31 + i // 4096) & 0xFF: every 4 KiB page differs, so a
    page served at the wrong offset shows in the digest. Built page by page with
    bytes.translate (a per-byte generator over 8 MiB took ~25 s under TCG at import)."""
    base = bytes((j * 31) & 0xFF for j in range(256)) * 16  # one page; 4096 * 31 is 0 mod 256
    pages = (base.translate(bytes((x + k) & 0xFF for x in range(256))) for k in range(-(-size // 4096)))
    return b"".join(pages)[:size]


BODY = page_pattern(SIZE)


def _sequential(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fio(path: str) -> int:
    """fio libaio O_DIRECT 4 KiB random reads at iodepth 32 over the file's first FIO_IOS * 4 KiB
    (fio's random map reads each block once): the read I/Os fio counted."""
    out = subprocess.run(["fio", "--name=bg", f"--filename={path}", "--rw=randread", "--bs=4k",
                          f"--size={FIO_IOS * 4}k", "--ioengine=libaio", "--iodepth=32", "--direct=1",
                          "--numjobs=1", "--output-format=json"], capture_output=True, text=True,
                         timeout=240, check=False)
    if out.returncode != 0:
        raise OSError(5, f"fio exited {out.returncode}: {out.stderr[-300:]}")
    return int(json.loads(out.stdout)["jobs"][0]["read"]["total_ios"])


def filled(before: int, after: int) -> int:
    """Of the READs that arrived while the held count went from before to after (nothing
    answered in between), how many found MAX_BG - 1 or more already held: each of those filled
    max_background."""
    return max(0, after - max(before, MAX_BG - 1))


def _drive(srv: Served, c: Client, budget: float) -> dict:
    """Answer every READ DELAY after it arrived until the client ends: the highest number of
    READs held at once (counted as they arrive, before any is answered), how many READs filled
    max_background (`filled`), the longest wait with none held, READs seen."""
    eng = srv.engine
    eng.auto = True
    eng.hold = lambda i: i["op"] == "READ"
    delay, n0 = DELAY * time_scale(), len(eng.log)
    most, full, gap = 0, 0, 0.0
    idle_since: float | None = None  # since when none is held (counted from the first READ on)
    started = False
    end = time.monotonic() + budget
    while not c.done() and time.monotonic() < end:
        before = len(eng.held)
        srv.pump(0.0)  # only adds to held: READs are answered below
        most, full = max(most, len(eng.held)), full + filled(before, len(eng.held))
        now = time.monotonic()
        for e in list(eng.held):
            if now - eng.infos[e.gid]["t"] >= delay:
                eng.answer(e)
        if eng.held:
            if idle_since is not None:
                gap = max(gap, now - idle_since)
            idle_since, started = None, True
        elif started and idle_since is None:
            idle_since = now
        time.sleep(0.002)
    eng.hold = None
    for e in list(eng.held):
        eng.answer(e)
    srv.pump(1.0, c.done)
    reads = [i for i in eng.log[n0:] if i["op"] == "READ"]
    return {"most": most, "full": full, "gap": gap, "reads": len(reads), "out": c.poll(0.0)}


def proof(st: dict, bound: int) -> str:
    """'' when the READs went to max_background often enough and never over bound (MAX_BG +
    nr_queues - 1), else why not: "not exercised: ..." when the limit was not reached
    MIN_FULL times."""
    if st["most"] > bound:
        return f"{st['most']} READs outstanding at once: more than max_background {MAX_BG} (+ one per other queue)"
    if st["full"] < MIN_FULL:
        return (f"not exercised: {st['full']} READs filled max_background {MAX_BG} (want >= {MIN_FULL}), at most "
                f"{st['most']} outstanding at once: the limit did not hold the client back")
    return ""


def _verdict(ctx: Ctx, case: str, what: str, st: dict, want: object, bound: int) -> None:
    out = st["out"]
    right = bool(out and out.get("ok") and out["value"] == want)
    stall = st["gap"] > STALL * time_scale()
    why = proof(st, bound)
    ok = right and not why and not stall
    ctx.result(case, ok, f"{what}: {st['reads']} READs, at most {st['most']} outstanding at once (bound {bound}), "
                         f"{st['full']} filled max_background {MAX_BG} (want >= {MIN_FULL})"
                         f"{f' ({why})' if why else ''}, longest wait with none to answer {st['gap']:.2f} s"
                         f"{' (A STALL)' if stall else ''}; client {str(out)[:100] if out else 'STILL BLOCKED'}")


def background(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Two batches submitted once (guest/edge/bgbatch.py), then readahead of 2 MiB and 128
    O_DIRECT AIO reads at depth 32, against max_background 4 and a slow server."""
    bgbatch.writeback_batch(ctx, args.transport)
    bgbatch.aio_batch_case(ctx, args.transport)
    srv = Served(ctx, "bg", transport=args.transport, queue_depth=8, pool_bufs=8, max_pages=4,
                 max_background=MAX_BG, init_flags=P.ASYNC_DIO, files={b"seq": BODY, b"dio": BODY})
    bound = MAX_BG + srv.conn.nr_queues - 1
    ctx.diag(f"{args.transport}: max_background {MAX_BG}, max_pages {srv.init.max_pages}, "
             f"{srv.conn.nr_queues} queues x 8 entries, pool_bufs {srv.counters.doc['uring'].get('pool_bufs', '-')}, "
             f"READs answered after {DELAY * time_scale():.3f} s")
    c = Client(ctx, "readahead", lambda: _sequential(srv.path("seq")), cpu=0)
    st = _drive(srv, c, min(90.0, ctx.left()))
    _verdict(ctx, "readahead_parallel", f"{SIZE >> 20} MiB buffered sequential read", st,
             hashlib.sha256(BODY).hexdigest(), bound)
    if not shutil.which("fio"):
        ctx.result("dio_aio_depth32_parallel", False, "fio is not installed in the guest")
        return
    c = Client(ctx, "fio", lambda: _fio(srv.path("dio")), cpu=1 % srv.conn.nr_queues)
    st = _drive(srv, c, min(120.0, ctx.left()))
    _verdict(ctx, "dio_aio_depth32_parallel", "fio libaio O_DIRECT 4 KiB randread, iodepth 32", st,
             FIO_IOS, bound)
