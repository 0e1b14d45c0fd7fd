"""U7: xattr payloads larger than the ring's payload buffer (FUSE_MAX_PAGES max_pages=1).

With max_write 4096 and max_pages 1 a ring entry carries at most max_payload_sz = 8 KiB.
A client's 64 KiB setxattr() value and a server's reply claiming 64 KiB both run past it:
7.2 reaches BUG_ON(!err) in fuse_copy_fill (an oops in the client's or the server's
context), 7.3 returns an error. The setxattr is judged against /dev/fuse, the reference: the
same call on a mount with the same INIT values whose ring never becomes ready (so its
requests go through /dev/fuse), in the same guest. /dev/fuse answers a SETXATTR that does not
fit the server's read buffer with E2BIG (fs/fuse/dev.c, fuse_dev_do_read: "SETXATTR is
special"); a transport must give the client the same answer, not just some error. The
claimed reply must be refused, and the connection keeps serving.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

from guest.edge.clients import Client, stat_size
from guest.edge.conn import Conn
from guest.edge.core import Ctx
from guest.edge.served import Served, devfuse_server
from guest.fuse import proto as P
from guest.fuse.fs import MemoryFs

BIG = bytes(range(256)) * 256  # 64 KiB, the largest xattr value the VFS allows
#: What a client may get for a reply that claims more than the transport carries.
TOO_BIG = (errno.E2BIG, errno.EIO, errno.ERANGE, errno.ENOSPC)
FILES = {b"f": b"f\n", b"g": b"g\n", b"h": b"h\n"}
LIMITS = {"queue_depth": 2, "max_write": 4096, "max_pages": 1}


def _outcome(out: dict | None) -> str:
    """A client outcome as one comparable word: 'set', -ERRNO, or 'blocked'."""
    if out is None:
        return "blocked"
    return "set" if out.get("ok") else "-" + errno.errorcode.get(out.get("errno") or 0, str(out.get("errno")))


def _set_big(ctx: Ctx, path: str, fs: MemoryFs, step: Callable[[], object], name: str) -> tuple[str, bytes | None]:
    """A client's 64 KiB setxattr on path (file f of fs), step() called until it ends or 30 s
    pass: (outcome, the value the server stored)."""
    c = Client(ctx, name, lambda: os.setxattr(path, "user.big", BIG) or "set", cpu=0)
    end = time.monotonic() + min(30.0, ctx.left())
    while not c.done() and time.monotonic() < end:
        step()
    got = _outcome(c.poll(0.0))
    try:
        stored = fs.getxattr(fs.lookup(P.ROOT_ID, b"f").ino, b"user.big")
    except OSError:  # ENODATA: nothing stored
        stored = None
    return (f"blocked after 30 s (state {c.state()})" if got == "blocked" else got), stored


def oversize_xattr(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Client-side setxattr of 64 KiB, then a server reply claiming 64 KiB for getxattr."""
    ref = Conn(ctx, "u7-devfuse")
    ref.setup(want_uring=False, max_write=LIMITS["max_write"], max_pages=LIMITS["max_pages"])
    # the read buffer of the ring server's own /dev/fuse reader (Served): 16 KiB here
    counters, ref_fs = devfuse_server(ref, FILES, bufsize=8192 + 8192)
    want, ref_stored = _set_big(ctx, f"{ref.mnt}/f", ref_fs, lambda: time.sleep(0.01), "setxattr-devfuse")
    dev = counters.snapshot()["paths"].get("devfuse", 0)
    ctx.result("devfuse_reference", not want.startswith("blocked") and dev > 0,
               f"/dev/fuse (same max_write and max_pages, INIT without FUSE_OVER_IO_URING): 64 KiB setxattr "
               f"-> {want}; requests served over /dev/fuse: {dev}")
    srv = Served(ctx, "u7", transport=args.transport, files=FILES, **LIMITS)
    srv.engine.auto = True
    ctx.diag(f"negotiated max_write {srv.init.max_write}, max_pages {srv.init.max_pages}, "
             f"max_payload_sz {srv.init.max_payload_sz}; {args.transport} payload buffers "
             f"{srv.engine.payload_size} bytes")
    got, stored = _set_big(ctx, srv.path("f"), srv.fs, lambda: srv.pump(0.01), "setxattr")
    seen = [i["payload_sz"] for i in srv.engine.log if i["op"] == "SETXATTR"]
    intact = stored in (None, BIG) and (stored is None) == (ref_stored is None)
    ctx.result("setxattr_same_as_devfuse", got == want and intact,
               f"64 KiB setxattr over {args.transport}: {got}, over /dev/fuse: {want}"
               + ("" if intact else f"; the server stored {len(stored or b'')} bytes, over /dev/fuse "
                  f"{len(ref_stored or b'')}")
               + f"; SETXATTR payload_sz seen by the ring server: {seen or 'none'}")

    g = srv.fs.lookup(P.ROOT_ID, b"g").ino
    srv.fs.setxattr(g, b"user.big", BIG, 0)
    srv.engine.claim_payload["GETXATTR"] = len(BIG)
    c2 = Client(ctx, "getxattr", lambda: len(os.getxattr(srv.path("g"), "user.big")), cpu=0)
    srv.pump(30.0, c2.done)
    ok, why = c2.verdict(len(BIG), TOO_BIG, waited=" after 30 s")
    out = c2.poll(0.0)
    errs = [f"{res}" for _, res, _ in srv.engine.ent_errors]
    # path proof: a non-error GETXATTR reply carried the claim (os.getxattr's first, 128-byte
    # call is answered ERANGE; the lie goes to its second, XATTR_SIZE_MAX one, the client's last)
    lied = [x for x in srv.engine.lied if x["op"] == "GETXATTR"]
    if not lied:
        ok, why = False, f"not exercised: no GETXATTR reply carried the claim; {why}"
    ctx.result("claimed_reply_rejected", ok and out is not None and not out.get("ok"),
               f"reply of {lied[0]['sent'] if lied else '-'} bytes claiming payload_sz {len(BIG)}: {why}; "
               f"entry CQE errors {errs or 'none'}")

    c3 = Client(ctx, "stat-h", lambda: stat_size(srv.path("h")), cpu=0)
    srv.pump(20.0, c3.done)
    out = c3.poll(0.0)
    ctx.result("connection_survives", bool(out and out.get("ok") and out["value"] == 2), f"stat h: {out}")
