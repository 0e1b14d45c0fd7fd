"""NOTIFY_RETRIEVE over io-uring (W3) and with notify_unique 0 (W2).

The server asks the kernel for cached file data by writing FUSE_NOTIFY_RETRIEVE to /dev/fuse;
the kernel answers with a FUSE_NOTIFY_REPLY request that carries the server's notify_unique.
Over io-uring that request lands in a ring entry (the fuse_notify_retrieve_in at the start of
the payload, op_in empty). With notify_unique 0 the 7.2/7.3 ring path reaches
WARN_ON(req->in.h.unique == 0) in fuse_uring_copy_to_ring: a WARN any server can trigger.
"""

from __future__ import annotations

import os
import struct

from guest.edge.clients import Client, read_file, stat_size
from guest.edge.commit import expect_no_warn_since, kmsg_mark, rearm_warn_once
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P

NOTIFY_RETRIEVE = 5  # enum fuse_notify_code
#: struct fuse_notify_retrieve_out: notify_unique, nodeid, offset, size, padding.
RETRIEVE_OUT = struct.Struct("<QQQII")
#: struct fuse_notify_retrieve_in: dummy1, offset, size, dummy2, dummy3, dummy4.
RETRIEVE_IN = struct.Struct("<QQIIQQ")
#: An even (no interrupt bit) unique far above the kernel's counter.
NOTIFY_UNIQUE = 0x4000_0000_0000


def notify_retrieve(fd: int, notify_unique: int, nodeid: int, offset: int, size: int) -> int | str:
    """Write FUSE_NOTIFY_RETRIEVE; the byte count written or the errno name."""
    body = RETRIEVE_OUT.pack(notify_unique, nodeid, offset, size, 0)
    msg = P.OUT_HEADER.pack(P.OUT_HEADER.size + len(body), NOTIFY_RETRIEVE, 0) + body
    try:
        return os.write(fd, msg)
    except OSError as exc:
        return os.strerror(exc.errno or 0)


def _slot_bytes(ctx: Ctx, srv: Served, e, length: int) -> bytes:  # noqa: ANN001
    """The first length bytes of entry e's zero-copy slot (WRITE_FIXED into a memfd: it only
    reads the slot); b"" when the slot gave none."""
    fd = os.memfd_create("fh-w3", os.MFD_CLOEXEC)
    ctx.closers.append(lambda: os.close(fd))
    res = srv.write_from_slot(e, fd, length, 0x7F33)
    return os.pread(fd, length, 0) if res and res > 0 else b""


def retrieve(ctx: Ctx, args) -> None:  # noqa: ANN001
    """W3 then W2 on one served connection with a page of cached file data."""
    ctx.diag(rearm_warn_once())
    data = (b"retrieve me, 4 KiB of page cache. " * 200)[:4096]
    srv = Served(ctx, "w2", transport=args.transport, queue_depth=2,
                 files={b"f": data, b"g": b"g\n", b"h": b"h\n"})
    srv.engine.auto = True
    srv.engine.hold = lambda info: info["op"] == "NOTIFY_REPLY"
    ino = srv.fs.lookup(P.ROOT_ID, b"f").ino
    c = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(20.0, c.done)
    out = c.poll(0.0)
    if not ctx.result("file_cached", bool(out and out.get("ok") and out["value"] == data.decode("latin-1")),
                      f"client read {str(out)[:120]}"):
        return

    # W3: a non-zero notify_unique reaches the server as a NOTIFY_REPLY ring request
    wrote = notify_retrieve(srv.conn.fd, NOTIFY_UNIQUE, ino, 0, len(data))
    ctx.result("retrieve_accepted", wrote == P.OUT_HEADER.size + RETRIEVE_OUT.size, f"write() -> {wrote}")
    got = srv.wait_held(1, 15.0)
    if not got:
        ctx.result("nonzero_unique_delivered", False, f"no NOTIFY_REPLY on the ring; log {srv.engine.log[-3:]}")
    else:
        e = srv.engine.held[0]
        info = srv.engine.infos[e.gid]
        if info.get("zero_copy"):  # generation D: the retrieved pages are in the entry's slot
            r_off, r_size, body = 0, info["payload_sz"], _slot_bytes(ctx, srv, e, len(data))
            where = f"zero-copy slot {e.slot}"
        else:
            mm, off = srv.engine.payload_loc(e, info["offset"])
            payload = bytes(mm[off:off + info["payload_sz"]])
            _, r_off, r_size = (RETRIEVE_IN.unpack_from(payload)[:3] if len(payload) >= RETRIEVE_IN.size
                                else (0, -1, -1))
            body = payload[RETRIEVE_IN.size:RETRIEVE_IN.size + r_size] if r_size >= 0 else b""
            where = "payload buffer"
        ctx.result("nonzero_unique_delivered",
                   info["unique"] == NOTIFY_UNIQUE and r_off == 0 and r_size == len(data) and body == data,
                   f"unique {info['unique']:#x}, payload_sz {info['payload_sz']}, retrieve_in offset {r_off} "
                   f"size {r_size}, data in the {where} {'intact' if body == data else 'differs'}")
        srv.engine.answer(e)  # commit it (the server has nothing to say: ENOSYS) so the entry returns
    c2 = Client(ctx, "stat-g", lambda: stat_size(srv.path("g")), cpu=0)
    srv.pump(20.0, c2.done)
    out = c2.poll(0.0)
    ctx.result("entry_back_in_service", bool(out and out.get("ok") and out["value"] == 2), f"stat g: {out}")

    # W2: notify_unique 0
    ctx.diag(rearm_warn_once())
    mark = kmsg_mark("W2 start")
    wrote = notify_retrieve(srv.conn.fd, 0, ino, 0, len(data))
    srv.pump(1.0)
    zero = [i for i in srv.engine.log if i["op"] == "NOTIFY_REPLY" and i["unique"] == 0]
    ctx.diag(f"notify_unique 0: write() -> {wrote}; delivered on the ring: {len(zero)}")
    c3 = Client(ctx, "stat-h", lambda: stat_size(srv.path("h")), cpu=0)
    srv.pump(20.0, c3.done)
    out = c3.poll(0.0)
    ctx.result("connection_survives", bool(out and out.get("ok") and out["value"] == 2), f"stat h: {out}")
    expect_no_warn_since(ctx, mark, "the notification")
