"""Data cases: boundary sizes up to several max-payload chunks, unaligned offsets, real tools,
mmap, O_DIRECT.

Sizes follow the negotiated max_payload M (Ctx.max_payload, 128 KiB with serve's defaults: no
request carries more than M bytes on any transport, so a file of k*M bytes is at least k WRITEs
and k READs by construction). `check --scale N` multiplies the multi-chunk sizes by N.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil

from guest.checks.context import Ctx, Skip, expect, pattern, sha256_file

#: Sizes whose edges do not move with M: empty, one byte, either side of a sector and of a page,
#: and a size just under half of serve's default 128 KiB chunk.
FIXED_SIZES = [0, 1, 511, 4095, 4096, 4097, 65535]
#: Full chunks in the multi-chunk size and the io_tools file (times --scale): a first, middle
#: and last full request and one more, then a short last request.
CHUNKS = 4


def sizes(max_payload: int, scale: int = 1) -> list[int]:
    """io_sizes' sizes in bytes: FIXED_SIZES, then M-1, M, M+1 (a payload just under, exactly
    at the most one request carries, and the first size that takes two), then CHUNKS*scale*M+3
    (several full requests and a 3-byte last one). The former list ended in 1 MiB+3 and 8 MiB:
    the 8 MiB file was 64 WRITEs and 64 READs of the same 128 KiB shape (16 MiB through the
    server per transport, most of io_sizes' 6-10 s under TCG) and reached no other path."""
    m = max_payload
    return sorted({*FIXED_SIZES, m - 1, m, m + 1, CHUNKS * scale * m + 3})


def smoke(ctx: Ctx) -> None:
    """Create, write, stat, read and unlink one file (always runs first)."""
    p = ctx.path("smoke")
    with open(p, "wb") as f:
        f.write(b"smoke")
    expect(os.stat(p).st_size == 5, "smoke size")
    with open(p, "rb") as f:
        expect(f.read() == b"smoke", "smoke data")
    os.unlink(p)


def io_sizes(ctx: Ctx) -> None:
    """Python write + read back + checksum for every size of sizes() (each written with one
    write(), read back in 1 MiB reads)."""
    todo = sizes(ctx.max_payload, ctx.scale)
    for size in todo:
        data = pattern(size, ctx.seed + size)
        p = ctx.path(f"size-{size}")
        with open(p, "wb") as f:
            f.write(data)
        expect(os.stat(p).st_size == size, f"size-{size}: st_size {os.stat(p).st_size}")
        got = sha256_file(p)
        expect(got == hashlib.sha256(data).hexdigest(), f"size-{size}: checksum mismatch")
    ctx.diag(f"sizes ok: {todo}")


def io_unaligned(ctx: Ctx) -> None:
    """pwrite/pread at odd offsets and lengths, spanning page and buffer edges."""
    p = ctx.path("unaligned")
    model = bytearray()
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i, (off, n) in enumerate([(4093, 7), (131069, 9), (1, 200000), (65537, 3),
                                      (300001, 131073), (0, 1)]):
            data = pattern(n, ctx.seed * 7 + i)
            expect(os.pwrite(fd, data, off) == n, f"short pwrite at {off}")
            if off + n > len(model):
                model.extend(bytes(off + n - len(model)))
            model[off:off + n] = data
        for off, n in [(0, len(model)), (4090, 20), (131060, 40), (300000, 131075)]:
            got = os.pread(fd, n, off)
            expect(got == bytes(model[off:off + n]), f"pread({off},{n}) mismatch")
    finally:
        os.close(fd)
    expect(sha256_file(p) == hashlib.sha256(model).hexdigest(), "final checksum mismatch")


def io_tools(ctx: Ctx) -> None:
    """dd, cp, cat and sha256sum against the mount, compared to a local file.

    Sizes (M = max_payload, 128 KiB by default; scale = --scale): the file is CHUNKS*scale*M +
    12345 bytes (512 KiB + 12345 at M = 128 KiB, formerly 3 MiB + 12345): cp's and cat's 128 KiB
    and dd's 64 KiB buffers move it in several full requests and a short last one whose tail
    page is partial (12345 is no page multiple), and sha256sum reads it back in several READs.
    dd bs=1000 writes M//1000+10 blocks times scale (141 at M = 128 KiB, formerly 1100): each
    is its own WRITE, about one in four straddles a page edge, and the file ends just past one
    M so reading it back takes a full READ and a short one. Those 1000-byte writes were most of
    io_tools' 15-40 s under TCG: every write() is two requests (WRITE and the kernel's GETXATTR
    of security.capability). The dd seek/skip overwrite copies pages 3-7 over pages seek to
    seek+4, seek = whole pages - 6 (125-129 at M = 128 KiB: across the 4th/5th chunk edge; at
    the smallest M, 8192, pages 5-9, so dd reads pages it has just written).
    """
    for tool in ("dd", "cp", "cat", "sha256sum"):
        if not shutil.which(tool):
            raise Skip(f"{tool} not installed")
    src = os.path.join(ctx.scratch, "src.bin")
    m = ctx.max_payload
    data = pattern(CHUNKS * ctx.scale * m + 12345, ctx.seed)
    odd_blocks = (m // 1000 + 10) * ctx.scale
    seek = len(data) // 4096 - 6
    with open(src, "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    ctx.run(["cp", src, ctx.path("cp.bin")])
    ctx.run(["dd", f"if={src}", f"of={ctx.path('dd.bin')}", "bs=65536", "status=none"])
    ctx.run(["dd", f"if={src}", f"of={ctx.path('dd-odd.bin')}", "bs=1000", f"count={odd_blocks}",
             "status=none"])
    out = ctx.run(["sha256sum", ctx.path("cp.bin"), ctx.path("dd.bin"),
                   ctx.path("dd-odd.bin")])
    sums = [line.split()[0] for line in out.splitlines()]
    odd = hashlib.sha256(data[:odd_blocks * 1000]).hexdigest()
    expect(sums == [want, want, odd], f"sha256sum mismatch: {sums} != {want}/{odd}")
    out_b = ctx.run_bytes(["cat", ctx.path("dd.bin")])
    expect(hashlib.sha256(out_b).hexdigest() == want, "cat output mismatch")
    ctx.run(["dd", f"if={ctx.path('dd.bin')}", f"of={ctx.path('dd.bin')}", "bs=4096",
             "skip=3", f"seek={seek}", "count=5", "conv=notrunc", "status=none"])
    model = bytearray(data)
    for i in range(5):  # as dd does: one page read, then written (at a small M the ranges overlap)
        model[(seek + i) * 4096:(seek + i + 1) * 4096] = model[(3 + i) * 4096:(4 + i) * 4096]
    expect(sha256_file(ctx.path("dd.bin")) == hashlib.sha256(model).hexdigest(),
           "dd seek/skip overwrite mismatch")


def rw(ctx: Ctx, what: str) -> dict[str, int]:
    """The server's READ/WRITE counters now, flat: "READ" and "WRITE" (requests, per_opcode) and
    "READ.<key>"/"WRITE.<key>" for each key of counters rw (bytes, direct_io, o_direct,
    write_cache and their _bytes: guest.counters.Counters.request). AssertionError "not
    exercised: ..." without a snapshot (Ctx.counters) or from a server without rw."""
    c = ctx.counters(what)
    if "rw" not in c:
        raise AssertionError(f"not exercised: the server's counters have no rw to count {what}")
    out = {op: c["per_opcode"].get(op, 0) for op in ("READ", "WRITE")}
    out.update({f"{op}.{k}": v for op, d in c["rw"].items() for k, v in d.items()})
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after - before, key by key (rw() documents)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def cached_reads(d: dict[str, int]) -> int:
    """Bytes READ through the page cache in a rw() delta: all READ bytes but fuse_direct_io's."""
    return d.get("READ.bytes", 0) - d.get("READ.direct_io_bytes", 0)


def drop_cache(fd: int) -> None:
    """Ask the kernel to drop fd's clean cached pages (POSIX_FADV_DONTNEED: generic_fadvise, FUSE
    has no fadvise of its own). Opening the file has dropped them already (fs/fuse/file.c
    fuse_open: invalidate_inode_pages2 unless the server answered FOPEN_KEEP_CACHE, which this
    one never does); the READ counters, not this call, prove the pages came from the server."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


#: Pages io_mmap dirties through a shared writable mapping: the first, one in the middle, the
#: last (partial: the file ends 777 bytes into it).
MMAP_SIZE = 1048576 + 777
MMAP_DIRTY = (0, 100, MMAP_SIZE // 4096)


def io_mmap(ctx: Ctx) -> None:
    """Read a file through mmap (page faults -> READ), then write pages of it through a shared
    writable mapping and msync (write-back -> WRITE), and compare.

    Proof (server counters, rw): the READs during the faults of the read-only mapping (opened
    afresh, its cache dropped) brought at least the whole file through the page cache (bytes not
    from fuse_direct_io); the WRITEs during msync include FUSE_WRITE_CACHE write-back covering
    every dirtied page (this server never negotiates FUSE_WRITEBACK_CACHE, so nothing else sends
    one); the re-read after that again comes from the server (at least the whole file READ)."""
    data = bytearray(pattern(MMAP_SIZE, ctx.seed + 99))
    p = ctx.path("mmap.bin")
    with open(p, "wb") as f:
        f.write(data)
    with open(p, "rb") as f:
        drop_cache(f.fileno())
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            t0 = rw(ctx, "the READs of mmap page faults")
            same = m[:] == data
            got = delta(t0, rw(ctx, "the READs of mmap page faults"))
            edge = m[4095:4097] == data[4095:4097]
        expect(cached_reads(got) >= MMAP_SIZE,
               f"not exercised: reading {MMAP_SIZE} mapped bytes took {got['READ']} READs of "
               f"{cached_reads(got)} page-cache bytes from the server (the pages were cached)")
        expect(same, "mmap contents differ")
        expect(edge, "mmap page edge differs")
    fd = os.open(p, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as m:
            t0 = rw(ctx, "the WRITEs of an msync")
            for page in MMAP_DIRTY:
                off = page * 4096 + 5
                data[off:off + 8] = m[off:off + 8] = b"dirtied!"
            m.flush()  # msync(MS_SYNC): fuse_fsync writes the dirty pages back
            wrote = delta(t0, rw(ctx, "the WRITEs of an msync"))
    finally:
        os.close(fd)
    want = sum(min(4096, MMAP_SIZE - page * 4096) for page in MMAP_DIRTY)
    expect(wrote["WRITE.write_cache"] >= 1 and wrote["WRITE.write_cache_bytes"] >= want,
           f"not exercised: msync of {len(MMAP_DIRTY)} dirtied pages ({want} bytes) sent "
           f"{wrote['WRITE.write_cache']} write-back WRITEs of {wrote['WRITE.write_cache_bytes']} bytes "
           f"({wrote['WRITE']} WRITEs in all)")
    t0 = rw(ctx, "the READs of the re-read")
    with open(p, "rb") as f:
        drop_cache(f.fileno())
        back = f.read()
    reread = delta(t0, rw(ctx, "the READs of the re-read"))["READ.bytes"]  # direct too: --direct-io
    expect(reread >= MMAP_SIZE, f"not exercised: the re-read took {reread} bytes of READs from the "
           f"server, not the whole {MMAP_SIZE}")
    expect(back == data, "the server's copy after msync differs from the written mapping")
    ctx.diag(f"io_mmap: faults READ {cached_reads(got)} bytes in {got['READ']} requests; msync wrote "
             f"{wrote['WRITE.write_cache_bytes']} bytes in {wrote['WRITE.write_cache']} write-back WRITEs")


def io_direct(ctx: Ctx) -> None:
    """O_DIRECT writes and reads with page-aligned buffers: one pwritev and one preadv of 512 KiB.

    Proof (server counters, rw): the WRITEs during the pwritev and the READs during the preadv
    that fuse_direct_io sent (LOCKOWNER) with O_DIRECT in their flags add up to the 512 KiB
    each: every byte went between the client's buffer and the server with no page cache in
    between (a buffered fallback's WRITEs carry O_DIRECT but not LOCKOWNER)."""
    p = ctx.path("direct.bin")
    size = 512 * 1024
    data = pattern(size, ctx.seed + 5)
    buf = mmap.mmap(-1, size)
    buf[:] = data
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    except OSError as exc:
        raise Skip(f"O_DIRECT open: {exc}") from None
    try:
        t0 = rw(ctx, "O_DIRECT WRITEs")
        expect(os.pwritev(fd, [buf], 0) == size, "short O_DIRECT write")
        t1 = rw(ctx, "O_DIRECT WRITEs")
        back = mmap.mmap(-1, size)
        expect(os.preadv(fd, [back], 0) == size, "short O_DIRECT read")
        t2 = rw(ctx, "O_DIRECT READs")
    finally:
        os.close(fd)
    w, r = delta(t0, t1), delta(t1, t2)
    for what, d, op in (("pwritev", w, "WRITE"), ("preadv", r, "READ")):
        expect(d[f"{op}.o_direct_bytes"] == size,
               f"not exercised: the O_DIRECT {what} of {size} bytes reached the server as "
               f"{d[f'{op}.o_direct']} direct {op}s with O_DIRECT of {d[f'{op}.o_direct_bytes']} bytes "
               f"({d[op]} {op}s of {d[f'{op}.bytes']} bytes in all)")
    expect(back[:] == data, "O_DIRECT read mismatch")
    expect(sha256_file(p) == hashlib.sha256(data).hexdigest(), "buffered re-read mismatch")
    ctx.diag(f"io_direct: {w['WRITE.o_direct']} O_DIRECT WRITEs, {r['READ.o_direct']} O_DIRECT READs "
             f"of {size} bytes each way")
