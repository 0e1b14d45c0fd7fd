"""Background requests over the ring (issue class "background accounting", BG).

Readahead and asynchronous direct I/O are background requests: the kernel counts them
against the INIT reply's max_background and, over io-uring, hands them to entries as the
limit allows (fuse_uring_flush_bg, fs/fuse/dev_uring.c: at most max_background active, plus
one per queue that has none). The connection here asks for max_background 4 and 16 KiB
requests (max_pages 4), and the server answers each READ only after DELAY (a slow backend),
so requests pile up if the kernel sends them in parallel. Two clients, one after the other:
a buffered sequential read of 8 MiB (readahead), and fio libaio O_DIRECT random reads at
iodepth 32 (FUSE_ASYNC_DIO negotiated). For each: more than one READ outstanding at the
server at once, never more than the bound above, the data intact, and no stall: between
the client's first and last READ the server is never left with nothing to answer for longer
than STALL. These two keep submitting, so a missing dispatch at completion never shows in
them: the batches submitted once (guest/edge/bgbatch.py) run first, on mounts of their own.
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


def page_pattern(size: int) -> bytes:
    """size bytes where byte i is (i * 31 + i // 4096) & 0xFF: every 4 KiB page differs, so a
    page served at the wrong offset shows in the digest. Built page by page with
    bytes.translate (a per-byte generator over 8 MiB took ~25 s under TCG at import)."""
    base = bytes((j * 31) & 0xFF for j in range(256)) * 16  # one page; 4096 * 31 is 0 mod 256
    pages = (base.translate(bytes((x + k) & 0xFF for x in range(256))) for k in range(-(-size // 4096)))
    return b"".join(pages)[:size]


BODY = page_pattern(8 << 20)


def _sequential(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fio(path: str) -> int:
    """fio libaio O_DIRECT 4 KiB random reads at iodepth 32 over the whole file: read I/Os."""
    out = subprocess.run(["fio", "--name=bg", f"--filename={path}", "--rw=randread", "--bs=4k",
                          "--size=2M", "--ioengine=libaio", "--iodepth=32", "--direct=1",
                          "--numjobs=1", "--output-format=json"], capture_output=True, text=True,
                         timeout=240, check=False)
    if out.returncode != 0:
        raise OSError(5, f"fio exited {out.returncode}: {out.stderr[-300:]}")
    return int(json.loads(out.stdout)["jobs"][0]["read"]["total_ios"])


def _drive(srv: Served, c: Client, budget: float) -> dict:
    """Answer every READ DELAY after it arrived until the client ends: the highest number of
    READs held at once, the longest wait with none held, READs seen."""
    eng = srv.engine
    eng.auto = True
    eng.hold = lambda i: i["op"] == "READ"
    delay, n0 = DELAY * time_scale(), len(eng.log)
    most, gap = 0, 0.0
    idle_since: float | None = None  # since when none is held (counted from the first READ on)
    started = False
    end = time.monotonic() + budget
    while not c.done() and time.monotonic() < end:
        srv.pump(0.0)
        now = time.monotonic()
        for e in list(eng.held):
            if now - eng.infos[e.gid]["t"] >= delay:
                eng.answer(e)
        most = max(most, len(eng.held))
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
    return {"most": most, "gap": gap, "reads": len(reads), "out": c.poll(0.0)}


def _verdict(ctx: Ctx, case: str, what: str, st: dict, want: object, bound: int) -> None:
    out = st["out"]
    right = bool(out and out.get("ok") and out["value"] == want)
    stall = st["gap"] > STALL * time_scale()
    ok = right and 2 <= st["most"] <= bound and not stall
    ctx.result(case, ok, f"{what}: {st['reads']} READs, at most {st['most']} outstanding at once "
                         f"(want 2..{bound}), longest wait with none to answer {st['gap']:.2f} s"
                         f"{' (A STALL)' if stall else ''}; client {str(out)[:100] if out else 'STILL BLOCKED'}")


def background(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Two batches submitted once (guest/edge/bgbatch.py), then readahead and O_DIRECT AIO at
    depth 32, against max_background 4 and a slow server."""
    bgbatch.writeback_batch(ctx, args.transport)
    bgbatch.aio_batch_case(ctx, args.transport)
    srv = Served(ctx, "bg", transport=args.transport, queue_depth=8, max_pages=4,
                 max_background=MAX_BG, init_flags=P.ASYNC_DIO, files={b"seq": BODY, b"dio": BODY})
    bound = MAX_BG + srv.conn.nr_queues - 1
    ctx.diag(f"{args.transport}: max_background {MAX_BG}, max_pages {srv.init.max_pages}, "
             f"{srv.conn.nr_queues} queues x 8 entries, READs answered after {DELAY * time_scale():.3f} s")
    c = Client(ctx, "readahead", lambda: _sequential(srv.path("seq")), cpu=0)
    st = _drive(srv, c, min(90.0, ctx.left()))
    _verdict(ctx, "readahead_parallel", "8 MiB buffered sequential read", st,
             hashlib.sha256(BODY).hexdigest(), bound)
    if not shutil.which("fio"):
        ctx.result("dio_aio_depth32_parallel", False, "fio is not installed in the guest")
        return
    c = Client(ctx, "fio", lambda: _fio(srv.path("dio")), cpu=1 % srv.conn.nr_queues)
    st = _drive(srv, c, min(120.0, ctx.left()))
    _verdict(ctx, "dio_aio_depth32_parallel", "fio libaio O_DIRECT 4 KiB randread, iodepth 32", st,
             512, bound)
