"""The ring's owner goes away with requests in its entries (issue class "hard teardown", T6).

One thread makes the io_uring, REGISTERs every entry, lets clients fill every entry of every
queue with a READ (one more READ per queue waits in the kernel for an entry) and exits
without committing. io_uring cancels that task's idle commands when it exits; the READs it
holds stay with the server. Then the rest of the server acts:

- `plain` ring: another thread COMMITs the held READs (COMMIT_AND_FETCH hands the entry back
  under the new task) and serves on. Every client must return within the bound, with the
  right bytes or a teardown error, no abort needed.
- `single_issuer` ring (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: only the
  owner may enter the ring, and completions run only inside its io_uring_enter): the other
  thread cannot submit (io_uring_enter fails, EEXIST), so the server closes its rings and
  aborts the connection through fusectl; every client must return within the bound after
  that, none left unkillable.

Either way `/sys/fs/fuse/connections/N/waiting` must come back to 0.
"""

from __future__ import annotations

import errno as E
import threading
import time

from guest import mount as M
from guest.edge import OWNER_VARIANTS
from guest.edge.clients import Client, read_file
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.uring import abi

DATA = {f"f{i}".encode(): f"file {i}\n".encode() * 100 for i in range(8)}
DEAD = (E.ENOTCONN, E.ECONNABORTED, E.ECANCELED, E.EIO)
FLAGS = {"plain": 0, "single_issuer": abi.Setup.SINGLE_ISSUER | abi.Setup.DEFER_TASKRUN}
DEPTH = 2


def _owner(ctx: Ctx, args, variant: str, box: dict) -> None:  # noqa: ANN001
    """The owner thread: ring, REGISTER, clients, READs held, then return (the thread exits)."""
    try:
        srv = Served(ctx, f"own-{variant}", transport=args.transport, queue_depth=DEPTH, files=DATA,
                     ring_flags=FLAGS[variant])
        box["srv"] = srv
        eng = srv.engine
        eng.auto = True
        eng.hold = lambda i: i["op"] == "READ"
        nq = srv.conn.nr_queues
        box["clients"] = [Client(ctx, f"{variant}-{i}", lambda i=i: read_file(srv.path(f"f{i}")), cpu=i % nq)
                          for i in range(nq * (DEPTH + 1))]
        srv.wait_held(nq * DEPTH, min(30.0, ctx.left()))
        box["held"] = len(eng.held)
        box["tid"] = threading.get_native_id()
    except BaseException as exc:  # noqa: BLE001 - reported by the scenario
        box["error"] = exc


def _variant(ctx: Ctx, args, variant: str) -> None:  # noqa: ANN001
    box: dict = {}
    t = threading.Thread(target=_owner, args=(ctx, args, variant, box), name=f"owner-{variant}")
    t.start()
    t.join(min(45.0, ctx.left()))
    srv = box.get("srv")
    held, nq = box.get("held", 0), srv.conn.nr_queues if srv else 0
    ok = not t.is_alive() and "error" not in box and held == nq * DEPTH
    ctx.result(f"{variant}_owner_exits_holding_requests", ok,
               f"owner thread alive={t.is_alive()} error={box.get('error')!r}; {held} READs held "
               f"in entries (want {nq * DEPTH}: every entry of {nq} queues)")
    if srv is None:
        return
    eng, clients = srv.engine, box.get("clients", [])
    minor = M.minor_of(srv.mnt)
    t0 = time.monotonic()
    eng.hold = None
    for e in list(eng.held):
        eng.answer(e)
    refused = None
    try:
        for ring in srv.rings():
            ring.submit()
    except OSError as exc:
        refused = exc.errno
    how = "another thread committed the held READs"
    if refused is None:
        srv.pump(min(20.0, ctx.left()), lambda: all(c.done() for c in clients))
    else:
        ctx.diag(f"{variant}: commits from a thread other than the owner: io_uring_enter "
                 f"{E.errorcode.get(refused, refused)}; closing the rings and aborting")
        srv.close_rings()
        srv.conn.abort()
        how = f"commit refused ({E.errorcode.get(refused, refused)}), rings closed, fusectl abort"
        end = time.monotonic() + min(10.0, ctx.left())
        while time.monotonic() < end and not all(c.done() for c in clients):
            time.sleep(0.05)
    outs = [c.poll(0.0) for c in clients]
    stuck = [f"{c.name} ({c.state()})" for c, o in zip(clients, outs, strict=True) if o is None]
    wrong = [o for o in outs if o and o.get("ok") and not o["value"].startswith("file ")]
    bad_err = [E.errorcode.get(o.get("errno"), o.get("errno")) for o in outs
               if o and not o.get("ok") and o.get("errno") not in DEAD]
    served = sum(1 for o in outs if o and o.get("ok"))
    ctx.result(f"{variant}_clients_return", not stuck and not wrong and not bad_err,
               f"{how}; after {time.monotonic() - t0:.1f} s: {served}/{len(clients)} read their file, "
               f"errors {sorted({E.errorcode.get(o.get('errno'), '?') for o in outs if o and not o.get('ok')})}"
               + (f"; STILL BLOCKED {stuck}" if stuck else "") + (f"; WRONG BYTES {wrong[:2]}" if wrong else "")
               + (f"; unexpected errors {bad_err}" if bad_err else ""))
    end = time.monotonic() + 5.0
    w = M.waiting(minor)
    while w not in (0, None) and time.monotonic() < end:  # RELEASEs of the clients' files come last
        srv.pump(0.1) if refused is None else time.sleep(0.1)
        w = M.waiting(minor)
    ctx.result(f"{variant}_waiting_back_to_zero", w == 0,
               f"/sys/fs/fuse/connections/{minor}/waiting = {w}")
    srv.conn.abort()


def owner_exits(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Both ring variants, one mount each, one after the other."""
    for variant in OWNER_VARIANTS:
        _variant(ctx, args, variant)
