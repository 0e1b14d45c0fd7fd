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


def io_mmap(ctx: Ctx) -> None:
    """Read a file through mmap (page faults -> READ) and compare."""
    size = 1048576 + 777
    data = pattern(size, ctx.seed + 99)
    p = ctx.path("mmap.bin")
    with open(p, "wb") as f:
        f.write(data)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        expect(m[:] == data, "mmap contents differ")
        expect(m[4095:4097] == data[4095:4097], "mmap page edge differs")


def io_direct(ctx: Ctx) -> None:
    """O_DIRECT writes and reads with page-aligned buffers."""
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
        expect(os.pwritev(fd, [buf], 0) == size, "short O_DIRECT write")
        back = mmap.mmap(-1, size)
        expect(os.preadv(fd, [back], 0) == size, "short O_DIRECT read")
        expect(back[:] == data, "O_DIRECT read mismatch")
    finally:
        os.close(fd)
    expect(sha256_file(p) == hashlib.sha256(data).hexdigest(), "buffered re-read mismatch")
