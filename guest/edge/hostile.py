"""A server that breaks its own buffers (issue class "hostile server").

The server makes its header area, or its payload buffers, unreadable (mprotect PROT_NONE) at
the worst moments: between writing a reply and its COMMIT (the kernel reads the reply header
from there), and before a request arrives (the kernel writes the request, and a WRITE's
payload, there). The kernel must then fail that one request (the client gets EIO or EFAULT)
or, where it reaches the memory through pinned pages of its own (registered buffers,
kernel-managed buffer rings), serve it correctly; never hand the client wrong bytes or a
success with nothing, never leave it blocked, and the connection keeps serving once the
memory is readable again.

While the memory is protected the scenario only submits: reaping would make the server
itself touch the protected page.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import time

from guest.edge.clients import Client
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.uring.ring import addr_of

PROT_NONE, PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
CLEAN = (errno.EIO, errno.EFAULT)
#: How a verdict names what a clean kernel gives.
EXPECTED = "(right bytes, EIO or EFAULT expected)"
BODY = bytes(range(256)) * 256  # 64 KiB, every offset distinct mod 256
DATA = {b"r": BODY, b"s": BODY[::-1], b"w": b"", b"t": BODY}
_libc = ctypes.CDLL(None, use_errno=True)


def mprotect(addr: int, length: int, prot: int) -> None:
    """mprotect(2) of [addr, addr + length) rounded out to pages; OSError on failure."""
    start = addr - addr % mmap.PAGESIZE
    end = -(-(addr + length) // mmap.PAGESIZE) * mmap.PAGESIZE
    if _libc.mprotect(ctypes.c_void_p(start), ctypes.c_size_t(end - start), prot) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect: {os.strerror(err)}")


def payload_areas(eng) -> list[tuple[int, int]]:  # noqa: ANN001
    """(address, length) of every payload mapping of a ring engine, whatever its transport."""
    if isinstance(getattr(eng, "payload", None), list):  # bufring: one payload area per queue
        return [(addr_of(m), len(m)) for m in eng.payload]
    if hasattr(eng, "payload"):  # iovec: one buffer per entry
        return [(eng.payload_addr, len(eng.payload))]
    if hasattr(eng, "pools"):  # bufpool, registered, zero-copy
        return [(p.base, p.length) for p in eng.pools]
    return [(addr_of(b), len(b)) for b in getattr(eng, "bufs", [])]  # kmbuf rings


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_then_read(path: str) -> str:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, BODY, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return _digest(path)


def _digest_of(value: object) -> str:
    """A wrong value as the verdict names it."""
    return f"digest {str(value)[:16]}"


def _survives(ctx: Ctx, case: str, srv: Served, name: str, want: bytes) -> None:
    c = Client(ctx, "after", lambda: _digest(srv.path(name)), cpu=0)
    srv.pump(min(20.0, ctx.left()), c.done)
    out = c.poll(0.0)
    ok = bool(out and out.get("ok") and out["value"] == hashlib.sha256(want).hexdigest())
    ctx.result(case, ok, f"a fresh read once the memory is readable again: {out or 'blocked'}")


def _protected(ctx: Ctx, srv: Served, areas: list[tuple[int, int]], seconds: float,
               start=None) -> None:  # noqa: ANN001
    """Submit what is queued, keep areas unreadable for seconds (reaping nothing; start() runs
    once they are), restore them."""
    for addr, length in areas:
        mprotect(addr, length, PROT_NONE)
    try:
        for ring in srv.rings():
            ring.submit()
        if start is not None:
            start()
        time.sleep(seconds)
    finally:
        for addr, length in areas:
            mprotect(addr, length, PROT_RW)


def protected_buffers(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Header area unreadable between a READ reply and its COMMIT; payload buffers unreadable
    before a WRITE arrives; each followed by a fresh read on the same connection."""
    srv = Served(ctx, "pb", transport=args.transport, files=DATA)
    eng = srv.engine
    eng.auto = True
    eng.hold = lambda i: i["op"] == "READ"
    want = hashlib.sha256(BODY).hexdigest()
    reader = Client(ctx, "reader", lambda: _digest(srv.path("r")), cpu=0)
    if not srv.wait_held(1, 20.0):
        ctx.result("header_fault_clean", False, f"no READ reached the ring: {eng.log[-3:]}")
        return
    eng.hold = None
    eng.answer(eng.held[0])  # reply written, its COMMIT queued, not submitted
    _protected(ctx, srv, [(eng.hdr_addr, len(eng.hdr))], 1.0)
    srv.pump(min(20.0, ctx.left()), reader.done)
    ok, why = reader.verdict(want, CLEAN, _digest_of, waited=" after the memory came back")
    ctx.result("header_fault_clean", ok, f"header area unreadable at COMMIT: {why} {EXPECTED}")
    _survives(ctx, "survives_header_fault", srv, "s", BODY[::-1])

    areas = payload_areas(eng)
    writer = Client(ctx, "writer", lambda: _write_then_read(srv.path("w")), cpu=0, gate=True)
    _protected(ctx, srv, areas, 3.0, start=writer.go)  # the client runs while they are unreadable
    early = writer.poll(0.0)
    srv.pump(min(20.0, ctx.left()), writer.done)
    ctx.diag(f"payload areas {[(hex(a), n) for a, n in areas]} unreadable for 3 s; the client "
             + (f"ended inside that window: {early}" if early else "was still waiting when they came back"))
    ok, why = writer.verdict(want, CLEAN, _digest_of, waited=" after the memory came back")
    ctx.result("payload_fault_clean", ok, f"payload buffers unreadable when the client wrote: {why} {EXPECTED}")
    _survives(ctx, "survives_payload_fault", srv, "t", BODY)
