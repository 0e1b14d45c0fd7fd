"""Load cases: one pinned client per CPU, a seeded fsx-style run, fio if present."""

from __future__ import annotations

import mmap
import os
import random
import shutil

from guest.checks.context import Ctx, Skip, expect, pattern

#: fsx's operations at --scale 1 (formerly 300; `check --fsx-ops` overrides): with the weights
#: below each kind is expected 10 or more times (reopen and fsync at 5 %), and the last
#: operations are forced to any kind not yet seen, so every kind runs (the proof in fsx).
FSX_OPS = 200
FSX_KINDS = ("write", "read", "trunc", "mmap", "reopen", "fsync")
FSX_WEIGHTS = (40, 35, 8, 7, 5, 5)


def _client(ctx: Ctx, cpu: int) -> int:
    """Body of one pinned child: write, read back, stat; returns an exit code."""
    os.sched_setaffinity(0, {cpu})
    p = ctx.path(f"cpu{cpu}.bin")
    data = pattern(262144 + cpu, ctx.seed + cpu)
    with open(p, "wb") as f:
        f.write(data)
    for _ in range(10):
        os.stat(p)
    with open(p, "rb") as f:
        if f.read() != data:
            return 2
    os.mkdir(ctx.path(f"cpu{cpu}.d"))
    os.rmdir(ctx.path(f"cpu{cpu}.d"))
    return 0


def per_cpu_clients(ctx: Ctx) -> None:
    """Concurrent clients, each pinned to one CPU, so every queue gets requests."""
    cpus = sorted(os.sched_getaffinity(0))
    pids = {}
    for cpu in cpus:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _client(ctx, cpu)
            finally:
                os._exit(code)
        pids[pid] = cpu
    bad = []
    for pid, cpu in pids.items():
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            bad.append((cpu, os.waitstatus_to_exitcode(status)))
    ctx.facts["client_cpus"] = cpus
    expect(not bad, f"clients failed (cpu, code): {bad}")
    ctx.diag(f"pinned clients on cpus {cpus} ok")


def _first_difference(got: bytes, want: bytes, base: int) -> str:
    """Where two reads part: got/want lengths, the first differing file offset, the run of
    differing bytes from there, and whether the bad bytes are zeros."""
    if len(got) != len(want):
        return f"got {len(got)} bytes, want {len(want)}"
    first = next(i for i in range(len(got)) if got[i] != want[i])
    end = first
    while end < len(got) and got[end] != want[end]:
        end += 1
    zeros = not any(got[first:end])
    return (f"first difference at file offset {base + first} (page offset {(base + first) % 4096}), "
            f"{end - first} bytes differ from there{', all zero' if zeros else ''}")


def fsx(ctx: Ctx) -> None:
    """Seeded random write/read/truncate/mmap/reopen/fsync on one file (up to 1 MiB: eight
    128 KiB chunks; writes up to 200000 and reads up to 300000 bytes span chunk edges) vs a
    model, ctx.fsx_ops operations (FSX_OPS times --scale unless --fsx-ops says). Path proof:
    every kind of FSX_KINDS ran at least once (an mmap only counts on a non-empty file), else
    "not exercised"."""
    rng = random.Random(ctx.seed)
    ctx.diag(f"fsx seed={ctx.seed} ops={ctx.fsx_ops}")
    p = ctx.path("fsx.bin")
    model = bytearray()
    ran = dict.fromkeys(FSX_KINDS, 0)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    limit = 1 << 20
    try:
        for i in range(ctx.fsx_ops):
            op = rng.choices(FSX_KINDS, FSX_WEIGHTS)[0]
            unseen = [k for k, n in ran.items() if n == 0]
            if ctx.fsx_ops - i <= len(unseen):  # the last operations: the kinds not run yet
                op = unseen[0]
            if op != "mmap" or model:  # an mmap of an empty file maps nothing: not run
                ran[op] += 1
            if op == "write":
                off = rng.randrange(0, limit)
                n = rng.choice([1, 7, 4096, rng.randrange(1, 200000)])
                n = min(n, limit - off) or 1
                data = rng.randbytes(n)
                expect(os.pwrite(fd, data, off) == n, f"op {i}: short write")
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = data
            elif op == "read":
                off = rng.randrange(0, max(1, len(model) + 100))
                n = rng.randrange(1, 300000)
                got = os.pread(fd, n, off)
                want = bytes(model[off:off + n])
                if got != want:
                    expect(False, f"op {i}: read({off},{n}) mismatch (seed {ctx.seed}): "
                           f"{_first_difference(got, want, off)}")
            elif op == "trunc":
                size = rng.randrange(0, limit)
                os.ftruncate(fd, size)
                model = model[:size] + bytearray(max(0, size - len(model)))
            elif op == "mmap" and model:
                with mmap.mmap(fd, len(model), prot=mmap.PROT_READ) as m:
                    expect(m[:] == model, f"op {i}: mmap view mismatch (seed {ctx.seed})")
            elif op == "reopen":
                os.close(fd)
                fd = os.open(p, os.O_RDWR)
            elif op == "fsync":
                os.fsync(fd)
            expect(os.fstat(fd).st_size == len(model), f"op {i} ({op}): size "
                   f"{os.fstat(fd).st_size} != {len(model)} (seed {ctx.seed})")
    finally:
        os.close(fd)
    ctx.diag(f"fsx ran {ran}")
    expect(all(ran.values()), f"not exercised: fsx ran {ran} in {ctx.fsx_ops} operations (seed {ctx.seed})")


def fio(ctx: Ctx) -> None:
    """fio random 4 KiB reads and writes with verification (crc32c), when fio is installed.

    The file is 2*M*scale bytes (M = max_payload: 256 KiB by default, formerly 2 MiB): 64
    blocks laid out, then each read or written once (about half each) in random order and the
    written ones verified, over two max-size chunks. The 2 MiB file made about 2100 requests
    (each 4 KiB write() also a GETXATTR of security.capability): 19-36 s under TCG, for the
    same paths.
    """
    if not shutil.which("fio"):
        raise Skip("fio not installed")
    size = 2 * ctx.max_payload * ctx.scale
    ctx.run(["fio", "--name=fh", f"--directory={ctx.mnt}", f"--size={size}", "--bs=4k",
             "--rw=randrw", "--verify=crc32c", "--do_verify=1", "--ioengine=psync",
             "--runtime=30", "--time_based=0", "--numjobs=1"], timeout=120)
