"""NOTIFY_RETRIEVE over io-uring (W3) and with notify_unique 0 (W2).

The server asks the kernel for cached file data by writing FUSE_NOTIFY_RETRIEVE to /dev/fuse;
the kernel answers with a FUSE_NOTIFY_REPLY request that carries the server's notify_unique.
Over io-uring that request lands in a ring entry (the fuse_notify_retrieve_in at the start of
the payload, op_in empty). With notify_unique 0 the 7.2/7.3 ring path reaches
WARN_ON(req->in.h.unique == 0) in fuse_uring_copy_to_ring: a WARN any server can trigger.

W2's case no_userspace_reachable_warn names the path notify_unique 0 took (w2_verdict): refused
at write() (the fix the known issue asks for: pass), accepted with its NOTIFY_REPLY delivered
(pass) or lost (fail), accepted and the kernel warned (fail: known issue
fuse-uring-notify-retrieve-unique-zero-warn). A refusal counts only when W3's notification,
identical but for notify_unique, was accepted on the same connection.
"""

from __future__ import annotations

import errno
import os
import struct
import time

from guest.edge.clients import Client, read_file, stat_size
from guest.edge.commit import kmsg_mark, rearm_warn_once, warn_since
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


#: How long W2 waits for notify_unique 0's NOTIFY_REPLY or a kernel warning, in seconds (a
#: refused notification: REFUSED_WAIT, for anything that comes anyway).
REPLY_WAIT, REFUSED_WAIT = 10.0, 1.0


def notify_retrieve(fd: int, notify_unique: int, nodeid: int, offset: int, size: int) -> int | str:
    """Write FUSE_NOTIFY_RETRIEVE; the byte count written or the errno name ("EINVAL")."""
    body = RETRIEVE_OUT.pack(notify_unique, nodeid, offset, size, 0)
    msg = P.OUT_HEADER.pack(P.OUT_HEADER.size + len(body), NOTIFY_RETRIEVE, 0) + body
    try:
        return os.write(fd, msg)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")


def w2_verdict(wrote: int | str, control: bool, ring: list[int], devfuse: int, warn: str) -> tuple[bool, str]:
    """Case no_userspace_reachable_warn of W2: (pass, the path notify_unique 0 took).

    wrote: notify_retrieve()'s result for notify_unique 0; control: W3's identical notification
    (same fd, nodeid, offset, size; notify_unique NOTIFY_UNIQUE) was accepted, so a refusal is
    about notify_unique 0; ring: uniques of the NOTIFY_REPLY requests that reached a ring entry
    after the write; devfuse: NOTIFY_REPLY requests read from /dev/fuse after it; warn: the
    first kernel warning line since the write, "" for none. A write() that returned the byte
    count went through fs/fuse/notify.c fuse_notify_retrieve and fuse_retrieve down to
    fuse_simple_notify_reply (any failure there is write()'s errno), so the NOTIFY_REPLY was
    queued: it must arrive or the kernel must say why."""
    where = (f"its NOTIFY_REPLY reached the ring with unique {ring[0]:#x}" if ring else
             f"its NOTIFY_REPLY came over /dev/fuse ({devfuse})" if devfuse else
             "no NOTIFY_REPLY reached the server")
    if isinstance(wrote, str):  # refused at write()
        if warn:
            return False, f"refused at write() ({wrote}), yet the kernel warned: {warn}"
        if not control:
            return False, (f"not exercised: write() -> {wrote}, and W3's notification (notify_unique "
                           f"{NOTIFY_UNIQUE:#x}, otherwise the same) was not accepted either: the refusal "
                           "need not be about notify_unique 0")
        if wrote == "ENOENT":
            return False, ("not exercised: write() -> ENOENT: the kernel no longer knew the file's nodeid "
                           "(fuse_ilookup), fuse_retrieve never ran")
        if ring or devfuse:
            return False, f"refused at write() ({wrote}), yet {where}"
        return True, (f"path: refused at write() ({wrote}) where W3's notification was accepted: the "
                      "kernel rejects notify_unique 0 (the fixed behaviour); no NOTIFY_REPLY, no kernel warning")
    if warn:
        return False, (f"accepted (write() -> {wrote}), {where}, and the kernel warned: {warn} (known issue "
                       "fuse-uring-notify-retrieve-unique-zero-warn)")
    if ring or devfuse:
        given = "" if not ring else " (kept 0)" if ring[0] == 0 else " (the kernel gave it one)"
        return True, f"path: accepted (write() -> {wrote}), {where}{given}; no kernel warning"
    return False, (f"accepted (write() -> {wrote}) but no NOTIFY_REPLY reached the server (ring or /dev/fuse) "
                   f"within {REPLY_WAIT:.0f} s and the kernel log has no warning: the notification was lost")


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
    w3_accepted = wrote == P.OUT_HEADER.size + RETRIEVE_OUT.size
    ctx.result("retrieve_accepted", w3_accepted, f"write() -> {wrote}")
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
    n_log, dev_key = len(srv.engine.log), ("devfuse", int(P.Op.NOTIFY_REPLY), None)
    dev0 = srv.counters.requests[dev_key]
    wrote = notify_retrieve(srv.conn.fd, 0, ino, 0, len(data))
    ring, devfuse, warn = _await_w2(srv, n_log, dev_key, dev0, mark,
                                    REFUSED_WAIT if isinstance(wrote, str) else REPLY_WAIT)
    for e in [e for e in srv.engine.held if srv.engine.infos[e.gid]["op"] == "NOTIFY_REPLY"]:
        srv.engine.answer(e)  # give the entry back (ENOSYS), as for W3's
    ctx.diag(f"notify_unique 0: write() -> {wrote}; NOTIFY_REPLY on the ring: {[hex(u) for u in ring]}, "
             f"over /dev/fuse: {devfuse}")
    c3 = Client(ctx, "stat-h", lambda: stat_size(srv.path("h")), cpu=0)
    srv.pump(20.0, c3.done)
    out = c3.poll(0.0)
    ctx.result("connection_survives", bool(out and out.get("ok") and out["value"] == 2), f"stat h: {out}")
    warn = warn or warn_since(mark)  # one that came while the client ran counts too
    ctx.result("no_userspace_reachable_warn", *w2_verdict(wrote, w3_accepted, ring, devfuse, warn))


def _await_w2(srv: Served, n_log: int, dev_key: tuple, dev0: int, mark: str,
              timeout: float) -> tuple[list[int], int, str]:
    """Pump until a NOTIFY_REPLY arrived (on the ring after engine log entry n_log, or over
    /dev/fuse: counters request dev_key beyond dev0) or a kernel warning follows mark, at most
    timeout seconds; (ring uniques, /dev/fuse count, warning line or "")."""
    end = time.monotonic() + timeout
    while True:
        srv.pump(0.25, lambda: any(i["op"] == "NOTIFY_REPLY" for i in srv.engine.log[n_log:]))
        ring = [i["unique"] for i in srv.engine.log[n_log:] if i["op"] == "NOTIFY_REPLY"]
        devfuse, warn = srv.counters.requests[dev_key] - dev0, warn_since(mark)
        if ring or devfuse or warn or time.monotonic() >= end:
            return ring, devfuse, warn
