"""A server that breaks its own buffers (issue class "hostile server").

The server makes its header area, or its payload buffers, unreadable (mprotect PROT_NONE) at
the worst moments: between writing a reply and its COMMIT (the kernel reads the reply header
from there), and before a request arrives (the kernel writes the request, and a WRITE's
payload, there). The kernel must then fail that one request (the client gets EIO or EFAULT)
or, where it reaches the memory through pinned pages of its own (registered buffers,
kernel-managed buffer rings), serve it correctly; never hand the client wrong bytes or a
success with nothing, never leave it blocked, and the connection keeps serving once the
memory is readable again.

Each case judges the manipulated request itself. Its client makes exactly one FUSE request
inside the window: an O_DIRECT pread of one page (no FUSE_ASYNC_DIO: one synchronous READ,
fs/fuse/file.c fuse_direct_io) for the header case, a one-page pwrite after a warm-up write for
the payload case (the warm-up's own requests, such as the GETXATTR of security.capability, are
served before). The client reports that syscall's outcome through a pipe at once and keeps its
file open until the window is over (its close sends FLUSH), so no later request of its own can
fail in the window and answer for it. While the memory is protected the server only submits:
reaping would make it touch the protected page, so whatever ends in the window was ended by the
kernel alone.

Path proofs (`not exercised: ...` failures otherwise): the READ was held in userspace; the
reply header was unreadable to the kernel when the COMMIT was submitted and when the window
closed (write(2) from it into a pipe fails EFAULT); the READ ended inside the window. The
payload case: the WRITE either ended inside the window (failed by the kernel) or was delivered
into a payload buffer the kernel pinned (a CQE posted in the window). The kernel's own log
lines ("Copying header from ring failed", "Copy to ring failed") are shown as evidence. The
7.3.4 reference: fuse_uring_commit (fs/fuse/dev_uring.c) ends the request with -EFAULT when
copy_header_from_ring fails; the upstream "fuse-uring: fix EFAULT clobber in
fuse_uring_commit" (June 2026) is the bug this catches: a success for a reply never read.
Generation D registers the headers as a fixed buffer (pinned): the header cases skip there.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import mmap
import os
import select
import time

from guest.edge import time_scale
from guest.edge.clients import Client
from guest.edge.core import Ctx, ename
from guest.edge.hung import Kmsg
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.uring.ring import addr_of

PROT_NONE, PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
PAGE = mmap.PAGESIZE
CLEAN = (errno.EIO, errno.EFAULT)
#: How a verdict names what a clean kernel gives.
EXPECTED = "(right bytes, EIO or EFAULT expected)"
BODY = bytes(range(256)) * 256  # 64 KiB, every offset distinct mod 256
DATA = {b"r": BODY, b"s": BODY[::-1], b"w": b"", b"t": BODY}
SENTINEL = 0xA5  # what the reader's buffer holds before its pread
WARM, SOLO = bytes([0x11]) * PAGE, bytes(range(256))[::-1] * (PAGE // 256)  # the writer's two pages
WINDOW = 3.0  # s (x the time scale) the memory stays unreadable, at most
#: Kernel log lines (7.3 fs/fuse/dev_uring.c, pr_info_ratelimited) of a header read failing at
#: COMMIT and of a request failing on its way into the ring.
HEADER_FAULT_LOG, ARRIVAL_FAULT_LOG = "Copying header from ring failed", "Copy to ring failed"
_libc = ctypes.CDLL(None, use_errno=True)


def mprotect(addr: int, length: int, prot: int) -> None:
    """mprotect(2) of [addr, addr + length) rounded out to pages; OSError on failure."""
    start = addr - addr % mmap.PAGESIZE
    end = -(-(addr + length) // mmap.PAGESIZE) * mmap.PAGESIZE
    if _libc.mprotect(ctypes.c_void_p(start), ctypes.c_size_t(end - start), prot) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect: {os.strerror(err)}")


def kernel_reads(addr: int, length: int = 16) -> int:
    """write(2) of [addr, addr + length) into a pipe: the bytes written, or -errno (-EFAULT when
    the kernel cannot read that memory of this process through copy_from_user)."""
    r, w = os.pipe()
    try:
        n = _libc.write(w, ctypes.c_void_p(addr), ctypes.c_size_t(length))
        return n if n >= 0 else -ctypes.get_errno()
    finally:
        os.close(r)
        os.close(w)


def payload_areas(eng) -> list[tuple[int, int]]:  # noqa: ANN001
    """(address, length) of every payload mapping of a ring engine, whatever its transport."""
    if isinstance(getattr(eng, "payload", None), list):  # bufring: one payload area per queue
        return [(addr_of(m), len(m)) for m in eng.payload]
    if hasattr(eng, "payload"):  # iovec: one buffer per entry
        return [(eng.payload_addr, len(eng.payload))]
    if hasattr(eng, "pools"):  # bufpool, registered, zero-copy
        return [(p.base, p.length) for p in eng.pools]
    return [(addr_of(b), len(b)) for b in getattr(eng, "bufs", [])]  # kmbuf rings


def headers_pinned(eng) -> bool:  # noqa: ANN001
    """Generation D: each queue's headers are an io_uring fixed buffer, reached by the kernel
    through pages it pinned at registration (mprotect of this process's mapping cannot stop it)."""
    return hasattr(eng, "qrings")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return _sha(f.read())


def _solo_pread(path: str, res_w: int, leave_r: int) -> dict:
    """Client body: open path O_DIRECT, then one pread of a page into a page-aligned buffer full
    of SENTINEL (one READ request); its outcome ({"n", "sha", "sentinel"} or {"errno"}) goes to
    res_w at once; the file stays open until leave_r is readable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, PAGE)
    buf.write(bytes([SENTINEL]) * PAGE)
    try:
        n = os.preadv(fd, [buf], 0)
        out = {"n": n, "sha": _sha(buf[:n]), "sentinel": buf[:n] == bytes([SENTINEL]) * n}
    except OSError as exc:
        out = {"errno": exc.errno}
    return _report_and_stay(fd, out, res_w, leave_r)


def _report_and_stay(fd: int, out: dict, res_w: int, leave_r: int) -> dict:
    """A solo client's end: its outcome to res_w at once, then fd stays open (no FLUSH or
    RELEASE into the window) until leave_r is readable; returns out."""
    os.write(res_w, json.dumps(out).encode())
    os.read(leave_r, 1)
    os.close(fd)
    return out


def _solo_pwrite(path: str, go_r: int, res_w: int, leave_r: int) -> dict:
    """Client body: open path, write WARM at 0 (served), report b"R", wait for go_r, then one
    pwrite of SOLO at PAGE; its outcome ({"n"} or {"errno"}) goes to res_w at once; the file
    stays open until leave_r is readable."""
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, WARM, 0)
    os.write(res_w, b"R")
    os.read(go_r, 1)
    try:
        out: dict = {"n": os.pwrite(fd, SOLO, PAGE)}
    except OSError as exc:
        out = {"errno": exc.errno}
    return _report_and_stay(fd, out, res_w, leave_r)


def _no_getxattr(srv: Served) -> None:
    """Answer GETXATTR with ENOSYS from now on: the kernel then stops asking (fc->no_getxattr,
    fs/fuse/xattr.c fuse_getxattr), so a write is one WRITE, without the GETXATTR of
    security.capability that file_remove_privs sends first on a mount without SB_NOSEC."""
    base = srv.server.dispatch

    def dispatch(h, arg0: bytes, rest: bytes):  # noqa: ANN001, ANN202
        return (-errno.ENOSYS, b"") if h.opcode == P.Op.GETXATTR else base(h, arg0, rest)

    srv.server.dispatch = dispatch


def _pipes(ctx: Ctx, n: int) -> list[tuple[int, int]]:
    out = [os.pipe() for _ in range(n)]
    for r, w in out:
        ctx.closers.extend((lambda fd=r: os.close(fd), lambda fd=w: os.close(fd)))
    return out


def _report(fd: int, seconds: float) -> dict | None:
    """The JSON a solo client writes to fd, if it comes within seconds (the server sleeps)."""
    end = time.monotonic() + seconds
    buf = b""
    while time.monotonic() < end:
        if select.select([fd], [], [], max(0.0, end - time.monotonic()))[0]:
            buf += os.read(fd, 4096)
            try:
                return json.loads(buf)
            except ValueError:
                continue
    return None


def _kernel_log(lines: list[str]) -> str:
    hdr = sum(HEADER_FAULT_LOG in ln for ln in lines)
    arr = sum(ARRIVAL_FAULT_LOG in ln for ln in lines)
    return f"kernel log in the window: {hdr} x '{HEADER_FAULT_LOG}', {arr} x '{ARRIVAL_FAULT_LOG}'"


def _survives(ctx: Ctx, case: str, srv: Served, name: str, want: bytes) -> None:
    n0 = len(srv.engine.log)
    c = Client(ctx, "after", lambda: _digest(srv.path(name)), cpu=0)
    srv.pump(min(20.0, ctx.left()), c.done)
    out = c.poll(0.0)
    reads = sum(i["op"] == "READ" for i in srv.engine.log[n0:])
    ok = bool(out and out.get("ok") and out["value"] == _sha(want)) and reads > 0
    ctx.result(case, ok, f"a fresh read once the memory is readable again: {out or 'blocked'}; READs "
               f"over the ring: {reads}" + ("" if reads else " (not exercised: no READ reached the ring)"))


def _judge_read(early: dict | None, late: dict | None, probe: tuple[int, int], state: str) -> tuple[bool, str]:
    """The held READ's own outcome: early = the pread's result inside the window, late = the
    client's once the window closed; probe = kernel_reads of the reply header at COMMIT and at
    the window's end."""
    if probe[0] != -errno.EFAULT or probe[1] != -errno.EFAULT:
        return False, (f"not exercised: the reply header was readable to the kernel (write(2) from it "
                       f"at COMMIT {ename(probe[0])}, at the window's end {ename(probe[1])})")
    if early is None:
        if late is None:
            return False, f"the READ never ended: the client is still blocked (state {state})"
        return False, ("not exercised: the READ ended only after the header was readable again (its "
                       f"COMMIT was not read in the window): {str(late)[:120]}")
    if "errno" in early:
        name = errno.errorcode.get(early["errno"], str(early["errno"]))
        return early["errno"] in CLEAN, f"the READ failed with {name} inside the window"
    if early["sentinel"]:
        return False, (f"SUCCESS WITH A REPLY NEVER READ: pread returned {early['n']} bytes and the "
                       "buffer still holds its sentinel")
    if early["n"] == PAGE and early["sha"] == _sha(BODY[:PAGE]):
        return False, ("not exercised: the READ got the right bytes although its reply header was "
                       "unreadable to the kernel's copy_from_user (pinned pages?)")
    return False, f"the READ succeeded WITH WRONG BYTES ({early['n']} bytes, sha {early['sha'][:16]})"


def _header_fault(ctx: Ctx, srv: Served, transport: str) -> None:
    """A held READ's reply written, the header area unreadable, its COMMIT submitted."""
    eng = srv.engine
    if headers_pinned(eng):
        for case in ("header_fault_clean", "survives_header_fault"):
            ctx.result(case, None, reason=f"{transport}: the kernel reads the headers through a fixed buffer "
                       "it pinned at registration; mprotect cannot make them unreadable to it")
        return
    eng.auto = True
    eng.hold = lambda i: i["op"] == "READ"
    (res_r, res_w), (leave_r, leave_w) = _pipes(ctx, 2)
    reader = Client(ctx, "reader", lambda: _solo_pread(srv.path("r"), res_w, leave_r), cpu=0)
    if not srv.wait_held(1, 20.0):
        ctx.result("header_fault_clean", False, f"not exercised: no READ reached the ring (requests "
                   f"{[i['op'] for i in eng.log]}; client {reader.poll(0.0)})")
        os.write(leave_w, b"l")
        _survives(ctx, "survives_header_fault", srv, "s", BODY[::-1])
        return
    eng.hold = None
    e = eng.held[0]
    info = eng.infos[e.gid]
    eng.answer(e)  # reply written, its COMMIT queued, not submitted
    kmsg = Kmsg()
    mprotect(eng.hdr_addr, len(eng.hdr), PROT_NONE)
    try:
        at_commit = kernel_reads(eng.hdr_addr + e.hdr_off)
        for ring in srv.rings():
            ring.submit()
        early = _report(res_r, WINDOW * time_scale())
        at_end = kernel_reads(eng.hdr_addr + e.hdr_off)
        posted = sum(r.ready() for r in srv.rings() if r.fd >= 0)
    finally:
        mprotect(eng.hdr_addr, len(eng.hdr), PROT_RW)
    log = _kernel_log(kmsg.lines())
    kmsg.close()
    os.write(leave_w, b"l")
    srv.pump(min(20.0, ctx.left()), reader.done)
    late = reader.poll(0.0)
    ok, why = _judge_read(early, late if late is None else late.get("value", late),
                          (at_commit, at_end), reader.state())
    ctx.result("header_fault_clean", ok,
               f"READ unique {info['unique']} (the client's only request in the window) answered, header "
               f"area unreadable, COMMIT submitted: {why} {EXPECTED}; {log}; CQEs posted in the window: "
               f"{posted}")
    _survives(ctx, "survives_header_fault", srv, "s", BODY[::-1])


def _judge_write(early: dict | None, posted: int, late: dict | None, stored: bytes) -> tuple[bool, str]:
    """The one WRITE's own outcome (see _payload_fault)."""
    if early is not None:
        if "errno" not in early:
            return False, f"the WRITE SUCCEEDED WITHOUT THE SERVER ({early}): nobody answered it in the window"
        name = errno.errorcode.get(early["errno"], str(early["errno"]))
        clean = early["errno"] in CLEAN and stored == WARM
        held = "the warm-up page only" if stored == WARM else f"{len(stored)} bytes, NOT the warm-up page alone"
        return clean, f"the WRITE failed with {name} inside the window (ended by the kernel); the server holds {held}"
    if posted == 0:
        return False, ("not exercised: the WRITE neither ended nor reached an entry while the payload "
                       f"buffers were unreadable; afterwards: {str(late)[:100] if late else 'still blocked'}")
    right = bool(late) and late.get("n") == PAGE and stored == WARM + SOLO
    return right, ("delivered inside the window through pages the kernel pinned, served after it: client "
                   f"{late or 'STILL BLOCKED'}, the server holds "
                   f"{'both pages, intact' if stored == WARM + SOLO else f'{len(stored)} bytes, NOT what was written'}")


def _payload_fault(ctx: Ctx, srv: Served) -> None:
    """Payload buffers unreadable when the client's one WRITE arrives."""
    eng = srv.engine
    eng.auto, eng.hold = True, None
    _no_getxattr(srv)
    (go_r, go_w), (res_r, res_w), (leave_r, leave_w) = _pipes(ctx, 3)
    writer = Client(ctx, "writer", lambda: _solo_pwrite(srv.path("w"), go_r, res_w, leave_r), cpu=0)
    ready = srv.pump(min(20.0, ctx.left()), lambda: bool(select.select([res_r], [], [], 0)[0]))
    if not (ready and os.read(res_r, 1) == b"R"):
        ctx.result("payload_fault_clean", False, f"not exercised: the warm-up write never completed "
                   f"(client {writer.poll(0.0) or writer.state()})")
        return
    areas = payload_areas(eng)
    n0 = len(eng.log)
    kmsg = Kmsg()
    for addr, length in areas:
        mprotect(addr, length, PROT_NONE)
    try:
        for ring in srv.rings():
            ring.submit()
        os.write(go_w, b"g")
        early = _report(res_r, WINDOW * time_scale())
        posted = sum(r.ready() for r in srv.rings() if r.fd >= 0)
    finally:
        for addr, length in areas:
            mprotect(addr, length, PROT_RW)
    log = _kernel_log(kmsg.lines())
    kmsg.close()
    late = None
    if early is None:  # served after the window (pinned path) or still stuck
        srv.pump(min(20.0, ctx.left()), lambda: bool(select.select([res_r], [], [], 0)[0]))
        late = _report(res_r, 1.0)
    os.write(leave_w, b"l")
    srv.pump(min(20.0, ctx.left()), writer.done)
    ino = srv.fs.lookup(P.ROOT_ID, b"w").ino
    stored = srv.fs.read(ino, ino, 0, 4 * PAGE)
    ok, why = _judge_write(early, posted, late, stored)
    ops = [i["op"] for i in eng.log[n0:]]
    ctx.result("payload_fault_clean", ok,
               f"payload areas {[(hex(a), n) for a, n in areas]} unreadable when the client's one WRITE "
               f"came: {why} {EXPECTED}; CQEs posted in the window: {posted}; {log}; requests seen after: {ops}")
    _survives(ctx, "survives_payload_fault", srv, "t", BODY)


def protected_buffers(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Header area unreadable between a READ reply and its COMMIT; payload buffers unreadable
    when a WRITE arrives; each followed by a fresh read on the same connection."""
    srv = Served(ctx, "pb", transport=args.transport, files=DATA)
    _header_fault(ctx, srv, args.transport)
    _payload_fault(ctx, srv)
