"""U7: xattr payloads larger than the ring's payload buffer (FUSE_MAX_PAGES max_pages=1).

With max_write 4096 and max_pages 1 a ring entry carries at most max_payload_sz = 8 KiB.
A client's 64 KiB setxattr() value and a server's reply claiming 64 KiB both run past it:
7.2 reaches BUG_ON(!err) in fuse_copy_fill (an oops in the client's or the server's
context), 7.3 returns an error. Correct: an error or the intact value, never a crash, and
the connection keeps serving.
"""

from __future__ import annotations

import errno
import os

from guest.edge.clients import Client, stat_size
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P

BIG = bytes(range(256)) * 256  # 64 KiB, the largest xattr value the VFS allows
#: What a client may get for a value that does not fit the transport.
TOO_BIG = (errno.E2BIG, errno.EIO, errno.ERANGE, errno.ENOSPC)


def oversize_xattr(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Client-side setxattr of 64 KiB, then a server reply claiming 64 KiB for getxattr."""
    srv = Served(ctx, "u7", transport=args.transport, queue_depth=2, max_write=4096, max_pages=1,
                 files={b"f": b"f\n", b"g": b"g\n", b"h": b"h\n"})
    srv.engine.auto = True
    ctx.diag(f"negotiated max_write {srv.init.max_write}, max_pages {srv.init.max_pages}, "
             f"max_payload_sz {srv.init.max_payload_sz}; {args.transport} payload buffers "
             f"{srv.engine.payload_size} bytes")

    def set_big() -> str:
        os.setxattr(srv.path("f"), "user.big", BIG)
        return "set"

    c = Client(ctx, "setxattr", set_big, cpu=0)
    srv.pump(30.0, c.done)
    ok, why = c.verdict("set", TOO_BIG, waited=" after 30 s")
    out = c.poll(0.0)
    stored = srv.fs.getxattr(srv.fs.lookup(P.ROOT_ID, b"f").ino, b"user.big") if ok and out.get("ok") else None
    if stored is not None and stored != BIG:
        ok, why = False, f"{why}, but the server stored {len(stored)} bytes that differ"
    seen = [i["payload_sz"] for i in srv.engine.log if i["op"] == "SETXATTR"]
    ctx.result("setxattr_error_or_intact", ok, f"64 KiB setxattr: {why}; SETXATTR payload_sz seen by the "
                                              f"server: {seen or 'none'}")

    g = srv.fs.lookup(P.ROOT_ID, b"g").ino
    srv.fs.setxattr(g, b"user.big", BIG, 0)
    srv.engine.claim_payload["GETXATTR"] = len(BIG)
    c2 = Client(ctx, "getxattr", lambda: len(os.getxattr(srv.path("g"), "user.big")), cpu=0)
    srv.pump(30.0, c2.done)
    ok, why = c2.verdict(len(BIG), TOO_BIG, waited=" after 30 s")
    out = c2.poll(0.0)
    errs = [f"{res}" for _, res, _ in srv.engine.ent_errors]
    ctx.result("claimed_reply_rejected", ok and not out.get("ok"),
               f"reply of {srv.engine.payload_size} bytes claiming payload_sz {len(BIG)}: {why}; "
               f"entry CQE errors {errs or 'none'}")

    c3 = Client(ctx, "stat-h", lambda: stat_size(srv.path("h")), cpu=0)
    srv.pump(20.0, c3.done)
    out = c3.poll(0.0)
    ctx.result("connection_survives", bool(out and out.get("ok") and out["value"] == 2), f"stat h: {out}")
