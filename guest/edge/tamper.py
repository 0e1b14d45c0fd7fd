"""Buffer-table tampering while requests are in flight (issue class "hostile server", H7).

Registered-buffer transports hand the kernel an io_uring fixed buffer it reads at COMMIT:
7.3's registered pool and zero-copy (slot q: queue q's payload pool, IORING_REGISTER_BUFFERS
then ADD_BUFPOOL), the posted kmbuf series (slot 0, or queue_depth with zero-copy: the
queue's headers). With a GETXATTR held in an entry the server (1, on one mount) replaces that
slot with a same-sized buffer through IORING_REGISTER_BUFFERS_UPDATE, then commits, and (2, on
another) unregisters every fixed buffer of the ring queue 0 rides on (IORING_UNREGISTER_BUFFERS:
7.3's one ring, so every queue's pool; D's queue 0 ring, so queue 0's headers), then commits.

What the server does in (1) is what a real server swapping its own table does, per transport:
- 7.3 (payload pools): the new buffer is a decoy full of 0xEE; the server keeps its pool, as
  ADD_BUFPOOL took the kernel's own reference to what was registered;
- generation D (headers): v4 looks the headers slot up by index for every request and every
  commit, on purpose (19/25 fuse_uring_headers_prep; the v4 cover letter: pinning dropped
  "and just do lookup every time", at the io_uring maintainer's request), so the server moves its headers along
  (KmbufTransport.replace_headers: copy them over, update the slot, read requests from and
  write replies to the new buffer). A server that kept parsing its old mapping would commit
  stale ids: its own bug, not the kernel's.
Correct: the client gets the right value or EIO/EFAULT, never the decoy's bytes; later
requests are served or fail the same way, none blocks; abort releases every client and the
mount unmounts; no page stays pinned (the scenario's no_leaks case). A later client still
blocked is described (state, wait channel; after abort and umount -l; whether SIGKILL ends
it), so a report names that client, not whichever task carries the same command line.
"""

from __future__ import annotations

import errno
import mmap
import os

from guest.edge.clients import Client
from guest.edge.core import Ctx, ename, kernel_stack
from guest.edge.kmbuf import umount_lazy
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.uring import abi, syscall
from guest.uring.ring import Ring, addr_of

VALUE = bytes(range(256)) * 8  # 2 KiB, what the server answers for user.v
DECOY = 0xEE
CLEAN = (errno.EIO, errno.EFAULT, errno.EINVAL, errno.ENOTCONN, errno.ECONNABORTED)
FILES = {f"g{i}".encode(): b"x" for i in range(6)}


def fixed_target(eng, qid: int) -> tuple[Ring, int, int, int, str]:  # noqa: ANN001
    """(ring, fixed buffer index, address, length, what) of the buffer the kernel reads a
    reply from at COMMIT on queue qid, per transport (see the module docstring)."""
    if hasattr(eng, "qrings"):  # generation D: the queue's headers
        first = min(e.hdr_off for e in eng.entries if e.qid == qid)
        return (eng.ring_of(qid), eng.headers_slot(), eng.hdr_addr + first, eng.depth * P.URING_HDR_SIZE,
                "headers")
    pool = eng.pools[qid]
    return eng.ring, qid, pool.base, pool.length, "payload pool"


def _outcome(what: str, c: Client | None, srv: Served, seconds: float) -> tuple[bool, str]:
    """Pump until the client ends (at most seconds): (clean?, what it saw)."""
    if c is None:
        return False, f"{what}: no GETXATTR reached the ring"
    srv.pump(min(seconds, srv.ctx.left()), c.done)
    ok, why = c.verdict(VALUE.hex(), CLEAN, _wrong, waited=f" after {seconds:.0f} s")
    return ok, f"{what}: {why}"


def _wrong(value: object) -> str:
    got = bytes.fromhex(str(value))
    return "THE DECOY'S BYTES" if set(got) == {DECOY} else f"bytes {got[:16]!r}"


def _replace(eng, qid: int, ctx: Ctx) -> str:  # noqa: ANN001
    """BUFFERS_UPDATE of queue qid's slot to a same-sized buffer (see the module docstring)."""
    ring, idx, _, length, _ = fixed_target(eng, qid)
    new = mmap.mmap(-1, length)
    new.write(bytes([DECOY]) * length)
    ctx.closers.append(new.close)
    if hasattr(eng, "replace_headers"):  # generation D: the server's headers follow its table
        eng.replace_headers(qid, new)
        return (f"BUFFERS_UPDATE of slot {idx} to a new buffer (the server's headers copied over, "
                "read and written there from then on)")
    ring.update_buffers(idx, [(addr_of(new), length)])
    return f"BUFFERS_UPDATE of slot {idx} to a decoy"


def _unregister(eng, qid: int, ctx: Ctx) -> str:  # noqa: ANN001
    syscall.io_uring_register(fixed_target(eng, qid)[0].fd, abi.Register.UNREGISTER_BUFFERS, 0, 0)
    return "UNREGISTER_BUFFERS"


def _blocked(ctx: Ctx, tag: str, clients: list[Client]) -> None:
    """After abort and umount -l: each client still blocked, its state and wait channel, then
    whether SIGKILL ends it within 3 s (diagnostics only: the cases have judged already)."""
    for c in clients:
        if c.done():
            continue
        before = f"state {c.state()}, {kernel_stack(c.pid) or 'no stack'}"
        after = (f"still there after SIGKILL: state {c.state()}, {kernel_stack(c.pid) or 'no stack'}"
                 if c.alive_after_kill(3.0) else "SIGKILL ended it")
        ctx.diag(f"{tag}: client {c.name} (pid {c.pid}) still blocked after abort and umount -l: "
                 f"{before}; {after}")


def _step(ctx: Ctx, args, tag: str, tamper) -> None:  # noqa: ANN001
    """One mount: a GETXATTR held, tamper(), COMMIT it; then a fresh GETXATTR per queue; abort."""
    srv = Served(ctx, f"tamper-{tag}", transport=args.transport, files=FILES)
    eng = srv.engine
    for name in FILES:
        srv.fs.setxattr(srv.fs.lookup(P.ROOT_ID, name).ino, b"user.v", VALUE, 0)
    eng.auto = True
    eng.hold = lambda i: i["op"] == "GETXATTR"
    _, idx, addr, length, what = fixed_target(eng, 0)
    c = Client(ctx, "g0", lambda: os.getxattr(srv.path("g0"), "user.v").hex(), cpu=0)
    srv.pump(min(20.0, ctx.left()), lambda: bool(eng.held) or c.done())
    held = list(eng.held)
    try:
        did = f"{tamper(eng, 0, ctx)}: 0"
    except OSError as exc:
        did = f"{tamper.__name__.strip('_')}: {ename(-(exc.errno or errno.EIO))}"
    eng.hold = None
    for e in held:
        eng.answer(e)
    ctx.diag(f"{args.transport}: queue 0's {what} are fixed buffer {idx} ({length} bytes at {addr:#x}); "
             f"{did} with {len(held)} GETXATTR held")
    ok, why = _outcome(f"{did}, then COMMIT", c if held else None, srv, 10.0)
    ctx.result(f"{tag}_in_flight_clean", ok, why)
    later = [Client(ctx, f"g{1 + q}", lambda q=q: os.getxattr(srv.path(f"g{1 + q}"), "user.v").hex(), cpu=q)
             for q in range(srv.conn.nr_queues)]
    seen = [_outcome(f"queue {q}", cl, srv, 10.0) for q, cl in enumerate(later)]
    ctx.result(f"{tag}_later_clean", all(ok for ok, _ in seen),
               "a fresh GETXATTR per queue after that: " + "; ".join(why for _, why in seen))
    srv.conn.abort()
    umount_lazy(ctx, srv, f"{tag}_umount_after_abort", f"{args.transport}: ")
    _blocked(ctx, tag, later)


def buffer_table(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Replace (one mount), then unregister (another), the fixed buffer a held request's reply
    goes through."""
    _step(ctx, args, "slot_replaced", _replace)
    _step(ctx, args, "table_unregistered", _unregister)
