"""Generation D: COMMIT_AND_FETCH when the headers buffer is gone (kmbuf v4 19/25, the audit).

What v4 does, read in the fixture's mbox files (posted-v4.mbx as posted; ported-v4-on-7.2.mbx
as forward-ported, with the line of fs/fuse/dev_uring.c after the whole series):
- fuse_uring_commit_fetch() looks the headers slot up by index (fuse_uring_headers_prep,
  posted-v4.mbx 3042-3064). When that fails it ends the committed request with the error
  (fuse_uring_req_end, posted-v4.mbx 3082-3086; ported 2173-2177, dev_uring.c 1361-1365) and
  then still fetches the next queued request for the same entry (fuse_uring_get_next_fuse_req,
  posted-v4.mbx 3095-3098; ported 2186-2189, dev_uring.c 1373-1376).
- Sending it goes through fuse_uring_prepare_send -> copy_header_to_ring ->
  get_kernel_ring_header, which starts from ent->headers_iter (posted-v4.mbx 2750, 2777;
  ported 1840, 1864). The failed lookup did not set that iterator (08/25
  io_uring_fixed_index_get returns before io_import_fixed), so it is the one from the entry's
  last successful headers_prep, when the held request was dispatched (send_in_task, ITER_DEST,
  posted-v4.mbx 3202), whose node fuse_uring_headers_cleanup (posted-v4.mbx 3032-3039)
  already put: after IORING_UNREGISTER_BUFFERS the imu goes back to ctx->imu_cache (which
  KASAN poisons) or is kvfree'd, and its pages are unpinned but still mapped in the server,
  so a stale write most likely lands in the server's old headers page.

The scenario: one queue entry (queue_depth 1) holds the first client's request; a second
client on the same CPU queues a request behind it; the server unregisters queue 0's fixed
buffers, then COMMITs the first. Its cases:
- second_queued_at_commit, the path proof: the one entry of queue 0 held the first request,
  fusectl's `waiting` counted the second in flight, the server had received nothing of it, and
  UNREGISTER_BUFFERS returned 0; otherwise `not exercised: <what>` and the rest is skipped;
- first_client_answered, second_client_answered: each client ends within 10 s, with the
  right st_size or any error (an answer, not a hang);
- no_headers_into_unregistered_buffer: no request reaches the server on queue 0 after the
  COMMIT (with no headers buffer registered, its headers can only have been written through
  the stale iterator, into memory the ring had unregistered); the server's diagnostic says
  whose request it was;
- abort_releases_clients, umount_after_abort: fusectl abort, then umount -l.
On the debug profile KASAN watches the stale bio_vec read; the host's per-test scan of the
kernel log fails the test on any report.
"""

from __future__ import annotations

import errno
import os

from guest import mount as M
from guest.edge.clients import Client, wait_all
from guest.edge.core import Ctx, ename, kernel_stack
from guest.edge.kmbuf import skip_all_without_d, umount_lazy
from guest.edge.served import Served
from guest.uring import abi, syscall

FILES = {b"f0": b"first " * 100, b"f1": b"second " * 300}
ANY_ERROR = tuple(errno.errorcode)  # an error is an answer: only a hang or a wrong size fails
AFTER_PROOF = ("first_client_answered", "second_client_answered", "no_headers_into_unregistered_buffer",
               "abort_releases_clients", "umount_after_abort")


def _stat(srv: Served, name: bytes):  # noqa: ANN202
    return lambda: os.stat(srv.path(name.decode())).st_size


def _answered(ctx: Ctx, case: str, c: Client, name: bytes) -> None:
    ok, why = c.verdict(len(FILES[name]), ANY_ERROR, waited=" 10 s after the COMMIT")
    ctx.result(case, ok, f"stat {name.decode()} (pid {c.pid}): {why}")


def _proof(ctx: Ctx, srv: Served, c1: Client, c2: Client) -> str:
    """'' when the second client's request sat queued behind the held one and queue 0's fixed
    buffers are gone; else what was not exercised. Unregisters queue 0's buffers."""
    eng = srv.engine
    held = next((e for e in eng.held if e.qid == 0), None)
    if held is None:
        return (f"not exercised: the first client's request never stayed in queue 0's entry "
                f"(held {[(e.qid, eng.infos[e.gid]['op']) for e in eng.held]}, client {c1.poll(0.0)})")
    minor = M.minor_of(srv.mnt)
    c2.go()
    srv.pump(min(5.0, ctx.left()), lambda: (M.waiting(minor) or 0) >= 2 or c2.done())
    srv.pump(min(0.3, ctx.left()))  # a request delivered anywhere would reach the server by now
    waiting = M.waiting(minor)
    seen = [i for i in eng.log if i["pid"] == c2.pid]
    info = eng.infos[held.gid]
    ctx.diag(f"queue 0 has {srv.engine.depth} entry, holding the first client's {info['op']} (unique "
             f"{info['unique']:#x}); second client pid {c2.pid} on CPU 0: state {c2.state()}, "
             f"{kernel_stack(c2.pid) or 'no stack'}; fusectl waiting {waiting}; its requests at the "
             f"server {[(i['op'], i['qid']) for i in seen]}")
    if c2.done() or seen:
        return f"not exercised: the second request was not queued ({c2.poll(0.0) or seen})"
    if (waiting or 0) < 2:
        return f"not exercised: fusectl counts {waiting} request(s) in flight, not the held one and the second"
    try:
        syscall.io_uring_register(eng.ring_of(0).fd, abi.Register.UNREGISTER_BUFFERS, 0, 0)
    except OSError as exc:
        return f"not exercised: UNREGISTER_BUFFERS on queue 0's ring: {ename(-(exc.errno or errno.EIO))}"
    return ""


def commit_without_headers(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A held request committed after IORING_UNREGISTER_BUFFERS while a second request waits
    behind it on the same queue (v4 19/25 fuse_uring_commit_fetch: see the module docstring)."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "kcf", transport="kmbuf", files=FILES, queue_depth=1)
    eng = srv.engine
    eng.auto = True
    c1 = Client(ctx, "first", _stat(srv, b"f0"), cpu=0, gate=True)
    c2 = Client(ctx, "second", _stat(srv, b"f1"), cpu=0, gate=True)
    eng.hold = lambda i: i["pid"] == c1.pid
    c1.go()
    srv.pump(min(15.0, ctx.left()), lambda: bool(eng.held) or c1.done())
    missing = _proof(ctx, srv, c1, c2)
    ctx.result("second_queued_at_commit", not missing, missing or
               "the second request was queued behind the held one; queue 0's fixed buffers unregistered")
    if missing:
        for case in AFTER_PROOF:
            ctx.result(case, None, reason="not exercised (see second_queued_at_commit)")
        srv.conn.abort()
        return
    first = len(eng.log)
    held = next(e for e in eng.held if e.qid == 0)
    eng.hold = None
    eng.answer(held)  # its COMMIT_AND_FETCH: the headers lookup fails now
    srv.pump(min(10.0, ctx.left()), lambda: c1.done() and c2.done())
    _answered(ctx, "first_client_answered", c1, b"f0")
    _answered(ctx, "second_client_answered", c2, b"f1")
    late = [i for i in eng.log[first:] if i["qid"] == 0]
    ctx.result("no_headers_into_unregistered_buffer", not late,
               "after the COMMIT, requests the server received on queue 0 with no headers buffer "
               "registered: " + (", ".join(
                   f"{i['op']} unique {i['unique']:#x} pid {i['pid']}"
                   + (" (THE SECOND CLIENT'S: its headers were written into memory the ring had "
                      "unregistered, through an earlier request's iterator)" if i["pid"] == c2.pid else "")
                   for i in late) or "none")
               + f"; entry errors {[(g, ename(r)) for g, r, _ in eng.ent_errors]}")
    aborted = srv.conn.abort()
    ok = aborted and wait_all([c1, c2], min(10.0, ctx.left()))
    ctx.result("abort_releases_clients", ok, f"fusectl abort {'written' if aborted else 'FAILED'}; "
               + "; ".join(f"{c.name}: {c.poll(0.0) or 'state ' + c.state()}" for c in (c1, c2)))
    umount_lazy(ctx, srv)
