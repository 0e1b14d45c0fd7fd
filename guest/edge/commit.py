"""COMMIT_AND_FETCH errors (C1, C5) and the reply-unique WARN (E4).

A held request survives wrong commits; a corrected commit still completes it.
"""

from __future__ import annotations

import errno
import os

from guest.edge import sqe as S
from guest.edge.clients import Client, read_file
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P

E = errno
COMMIT = P.URING_CMD_COMMIT_AND_FETCH
#: A kernel warning line (7.x: "WARNING: fs/fuse/dev_uring.c:653 at fuse_uring_cmd+0x..").
WARN_MARKS = ("WARNING:", "------------[ cut here ]")
CLEAR_WARN_ONCE = "/sys/kernel/debug/clear_warn_once"


def commit_errors(ctx: Ctx, args) -> None:  # noqa: ANN001
    """C1 qid >= nr_queues -> -EINVAL; C5 unknown/int-bit/wrong-qid/double -> -ENOENT."""
    data = b"commit me\n" * 50
    srv = Served(ctx, "c", transport=args.transport, queue_depth=2, files={b"f": data})
    c = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)
    if not srv.wait_held(1, 15.0):
        ctx.diag(f"no request reached the ring: log {srv.engine.log}")
        return
    e = srv.engine.held[0]
    q, cid, n = e.qid, e.commit_id, srv.conn.nr_queues
    ctx.diag(f"held {srv.engine.infos[e.gid]}")
    ctx.expect_res("qid_out_of_range_einval", srv.raw(COMMIT, S.commit(n, cid)), -E.EINVAL,
                   f"C1 COMMIT qid={n}:")
    ctx.expect_res("unknown_id_enoent", srv.raw(COMMIT, S.commit(q, cid + (1 << 40))),
                   -E.ENOENT, "C5 COMMIT of an id never delivered:")
    ctx.expect_res("int_bit_id_enoent", srv.raw(COMMIT, S.commit(q, cid | 1)), -E.ENOENT,
                   "C5 COMMIT id|1:")
    if n > 1:
        ctx.expect_res("wrong_qid_enoent", srv.raw(COMMIT, S.commit((q + 1) % n, cid)),
                       -E.ENOENT, "C5 COMMIT on another queue:")
    else:
        ctx.result("wrong_qid_enoent", None, reason="needs two queues")
    ctx.result("request_still_pending", c.poll(0.2) is None and e in srv.engine.held,
               f"client done={c.done()}")
    srv.engine.auto = True
    srv.engine.answer(e)
    srv.pump(20.0, c.done)
    out = c.poll(0.0)
    ctx.result("corrected_commit_completes", bool(out and out.get("ok")
                                                  and out["value"] == data.decode()),
               f"client {str(out)[:200]}")
    ctx.expect_res("double_commit_enoent", srv.raw(COMMIT, S.commit(q, cid)), -E.ENOENT,
                   "C5 second COMMIT of the same id:")


def kmsg_records(fd: int) -> list[str]:
    """The records readable now from a non-blocking /dev/kmsg fd, without their headers."""
    out = []
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            return out
        except OSError as exc:
            if exc.errno == E.EPIPE:  # overwritten record
                continue
            return out
        out.append(rec.decode("utf-8", "replace").split(";", 1)[-1])


def kmsg() -> str:
    """The whole kernel log (records from /dev/kmsg, non-blocking)."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return "".join(kmsg_records(fd))
    finally:
        os.close(fd)


def rearm_warn_once() -> str:
    """Reset WARN_ONCE flags (debugfs), so a warning that fired earlier in this boot shows
    again; returns what happened, for the diagnostics."""
    if not os.path.exists(CLEAR_WARN_ONCE):
        os.system("mount -t debugfs none /sys/kernel/debug 2>/dev/null")
    try:
        with open(CLEAR_WARN_ONCE, "w") as f:
            f.write("1")
        return "WARN_ONCE flags re-armed"
    except OSError as exc:
        return f"cannot re-arm WARN_ONCE ({exc}): an earlier WARN in this boot would hide this one"


def kmsg_mark(text: str) -> str:
    """Write a unique marker into the kernel log; return it."""
    mark = f"fuse-harness-edge {os.getpid()} {os.urandom(4).hex()} {text}"
    with open("/dev/kmsg", "w") as f:
        f.write(mark + "\n")
    return mark


def reply_int_bit(ctx: Ctx, args) -> None:  # noqa: ANN001
    """E4: a reply whose unique has bit 0 set must not reach a WARN from userspace."""
    ctx.diag(rearm_warn_once())
    mark = kmsg_mark("E4 start")
    data = b"int bit\n" * 64
    srv = Served(ctx, "e4", transport=args.transport, queue_depth=2, files={b"f": data})
    srv.engine.auto = True
    srv.engine.int_bit_once = True
    c = Client(ctx, "reader", lambda: read_file(srv.path("f")), cpu=0)
    srv.pump(20.0, c.done)
    out = c.poll(0.0)
    sent = srv.engine.int_bit_sent  # path proof: the reply that carried bit 0
    where = (f"the {sent[0]['op']} reply (unique {sent[0]['unique']}) carried unique|1" if sent else
             "not exercised: no reply went out with the bit set")
    ctx.result("client_completes", bool(sent and out and out.get("ok") and out["value"] == data.decode()),
               f"{where}; client {str(out)[:200]}")
    srv.pump(0.5)
    if not sent:
        ctx.result("no_userspace_reachable_warn", False, where)
        return
    expect_no_warn_since(ctx, mark, "the reply")


def warn_since(mark: str) -> str:
    """The first kernel warning line (its "WARNING:" line if there is one) after mark (kmsg_mark)
    was written, or "" for none (the whole log is searched when the mark is gone)."""
    log = kmsg()
    since = log[log.rfind(mark):] if mark in log else log
    hits = [ln.strip() for ln in since.splitlines() if any(m in ln for m in WARN_MARKS)]
    return next((h for h in hits if "WARNING:" in h), hits[0] if hits else "")


def expect_no_warn_since(ctx: Ctx, mark: str, what: str) -> bool:
    """Case no_userspace_reachable_warn: no kernel warning after mark (kmsg_mark) was written."""
    warn = warn_since(mark)
    why = f"kernel log: {warn}" if warn else f"no WARN in the kernel log since {what}"
    return ctx.result("no_userspace_reachable_warn", not warn, why)
