"""Data cases: sizes 0..8 MiB, unaligned offsets, real tools, mmap, O_DIRECT."""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil

from guest.checks.context import Ctx, Skip, expect, pattern, sha256_file

SIZES = [0, 1, 511, 4095, 4096, 4097, 65535, 131072, 131073, 1048576 + 3, 8 << 20]


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
    """Python write + read back + checksum for every size in SIZES."""
    for size in SIZES:
        data = pattern(size, ctx.seed + size)
        p = ctx.path(f"size-{size}")
        with open(p, "wb") as f:
            f.write(data)
        expect(os.stat(p).st_size == size, f"size-{size}: st_size {os.stat(p).st_size}")
        got = sha256_file(p)
        expect(got == hashlib.sha256(data).hexdigest(), f"size-{size}: checksum mismatch")
    ctx.diag(f"sizes ok: {SIZES}")


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
    """dd, cp, cat and sha256sum against the mount, compared to a local file."""
    for tool in ("dd", "cp", "cat", "sha256sum"):
        if not shutil.which(tool):
            raise Skip(f"{tool} not installed")
    src = os.path.join(ctx.scratch, "src.bin")
    data = pattern(3 * 1048576 + 12345, ctx.seed)
    with open(src, "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    ctx.run(["cp", src, ctx.path("cp.bin")])
    ctx.run(["dd", f"if={src}", f"of={ctx.path('dd.bin')}", "bs=65536", "status=none"])
    ctx.run(["dd", f"if={src}", f"of={ctx.path('dd-odd.bin')}", "bs=1000", "count=1100",
             "status=none"])
    out = ctx.run(["sha256sum", ctx.path("cp.bin"), ctx.path("dd.bin"),
                   ctx.path("dd-odd.bin")])
    sums = [line.split()[0] for line in out.splitlines()]
    odd = hashlib.sha256(data[:1100000]).hexdigest()
    expect(sums == [want, want, odd], f"sha256sum mismatch: {sums} != {want}/{odd}")
    out_b = ctx.run_bytes(["cat", ctx.path("dd.bin")])
    expect(hashlib.sha256(out_b).hexdigest() == want, "cat output mismatch")
    ctx.run(["dd", f"if={ctx.path('dd.bin')}", f"of={ctx.path('dd.bin')}", "bs=4096",
             "skip=3", "seek=501", "count=5", "conv=notrunc", "status=none"])
    model = bytearray(data)
    model[501 * 4096:506 * 4096] = data[3 * 4096:8 * 4096]
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
