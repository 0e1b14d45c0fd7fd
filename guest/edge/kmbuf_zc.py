"""Generation D zero-copy teardown: what a server can still reach after a request ended."""

from __future__ import annotations

import os

from guest import mount as M
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.core import Ctx, ename
from guest.edge.kmbuf import DATA, pwrite_file, skip_all_without_d, umount_lazy
from guest.edge.served import Served


def zc_teardown(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Abort with a zero-copy WRITE in flight: the request ends, and the entry's buffer slot
    must no longer reach the client's pages (the series leaves them registered on teardown)."""
    if not skip_all_without_d(ctx):
        return
    srv = Served(ctx, "kzt", transport="kmbuf-zero-copy", files=DATA)
    eng = srv.engine
    eng.hold = lambda i: i["op"] == "WRITE"
    eng.auto = True
    secret = b"zero-copy page " * 200
    w = Client(ctx, "writer", lambda: pwrite_file(srv.path("f"), secret), cpu=0)
    held = srv.pump(15.0, lambda: bool(eng.held))
    e = eng.held[0] if held else None
    if e is None:
        ctx.result("write_held_in_slot", False, "not exercised: no WRITE was held")
        return
    probe = os.memfd_create("fh-kzt", os.MFD_CLOEXEC)
    ctx.closers.append(lambda: os.close(probe))
    before = srv.write_from_slot(e, probe, len(secret), 0x7F01)
    same = before is not None and before > 0 and os.pread(probe, len(secret), 0) == secret
    # path proof of slot_empty_after_abort: the slot held the writer's pages before the abort
    ctx.result("write_held_in_slot", same,
               f"WRITE held on entry {e.gid} (slot {e.slot}); WRITE_FIXED from the slot while held: "
               f"{ename(before)}" + ("" if same else " (not exercised: no page of the writer in the slot)"))
    ctx.result("abort_written", srv.conn.abort(), "fusectl abort with the WRITE held")
    ok = wait_all([w], 10.0)
    ctx.result("clients_return", ok, f"writer: {w.poll(0.0) or 'state ' + w.state()}")
    os.pwrite(probe, bytes(len(secret)), 0)
    after = srv.write_from_slot(e, probe, len(secret), 0x7F02)
    leak = after is not None and after > 0
    ctx.result("slot_empty_after_abort", after is not None and after < 0,
               f"WRITE_FIXED from slot {e.slot} after the request ended: {ename(after)}"
               + (f" ({'the client pages' if os.pread(probe, len(secret), 0) == secret else 'stale bytes'}"
                  " are still reachable)" if leak else ""))
    umount_lazy(ctx, srv)
    # The same teardown path with a zero-copy READ held, ended by umount -l + abort (no
    # probe of that slot: it maps the reader's pages for writing).
    srv2 = Served(ctx, "kzr", transport="kmbuf-zero-copy", files=DATA)
    srv2.engine.hold = lambda i: i["op"] == "READ"
    srv2.engine.auto = True
    r = Client(ctx, "reader", lambda: read_file(srv2.path("f")), cpu=0)
    held = srv2.pump(15.0, lambda: bool(srv2.engine.held))
    minor = M.minor_of(srv2.mnt)  # the fusectl entry outlives the detached mount
    try:
        M.umount(srv2.mnt, M.MNT_DETACH)
    except OSError as exc:
        ctx.diag(f"umount -l with a zero-copy READ held: {exc.strerror}")
    aborted = minor is not None and M.abort(minor=minor)
    ok = held and aborted and wait_all([r], 10.0)
    ctx.result("read_held_umount_abort", ok, f"READ held {held}, abort {aborted}, "
               f"reader: {r.poll(0.0) or 'state ' + r.state()}")


def _grow_past_short_read(srv: Served, rounds: int, size: int = 300000) -> list[int]:
    """Client body: files truncated to a non-page-aligned size, read short, then grown by a
    write beyond; the rounds whose bytes past the old EOF are not zero."""
    bad = []
    for i in range(rounds):
        fd = os.open(srv.path(f"f{i}"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(fd, os.urandom(size), 0)  # random content: stale bytes are not zero
        os.pread(fd, size, 0)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # freed pages, likely reused next
        eof = 150123 + 1000 * i  # not page aligned
        os.ftruncate(fd, eof)
        os.pread(fd, 200000, 100000)  # the page holding eof is read short
        os.pwrite(fd, b"z", size - 1)  # the file grows past that page without touching it
        tail = os.pread(fd, 4096 - eof % 4096, eof)
        os.close(fd)
        if any(tail):
            bad.append(i)
    return bad


def short_read_tail(ctx: Ctx, args) -> None:  # noqa: ANN001
    """A zero-copy READ answered short (at EOF) must leave the rest of the client's page
    zeroed, as a copied READ does (fuse page_zeroing): else, once the file grows by a write
    further on, the bytes past the old EOF show whatever the page held before (seen first as
    fsx mismatches starting exactly at an earlier truncation point). The same client on a
    kmbuf mount (payload copied) is the control."""
    if not skip_all_without_d(ctx):
        return
    for case, transport in (("copied_read_tail_zeroed", "kmbuf"),
                            ("short_read_tail_zeroed", "kmbuf-zero-copy")):
        srv = Served(ctx, case[:6], transport=transport, files={})
        srv.engine.auto = True
        c = Client(ctx, "reader", lambda s=srv: _grow_past_short_read(s, 8), cpu=0)
        srv.pump(min(60.0, ctx.left() - 5), c.done)
        out = c.poll(0.0)
        z = srv.counters.snapshot()["zero_copy"]
        ok = bool(out and out.get("ok") and out["value"] == [])
        unproven = transport.endswith("zero-copy") and not z["read"]  # path proof: READs went zero-copy
        ok = ok and not unproven
        ctx.result(case, ok, ("not exercised: no READ went through a zero-copy slot; " if unproven else "")
                   + f"{transport}: 8 files truncated to a non-page-aligned size, read short, "
                   "then grown by a write beyond: "
                   + (f"non-zero bytes past the old EOF in rounds {out['value']}" if out and out.get("ok")
                      else f"client {out or 'state ' + c.state()}") + f"; zero-copy {z}")
        srv.conn.abort()
