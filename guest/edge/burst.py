"""First REGISTERs from one thread per queue, all released at once right after INIT, over many
mounts (issue class "hard teardown", T8: registration races).

libfuse's model: each queue has its own thread and io_uring, and all of them start the moment
INIT is answered, so the kernel sees the first commands of every queue (ADD_QUEUE and
ADD_BUFPOOL on 7.3, then REGISTER: on 7.2 the first REGISTER also creates the ring) at the
same time, while the first requests arrive before the ring is ready (they go through
/dev/fuse). Each round mounts, answers INIT, makes one ring per queue inside that queue's
thread (registered pool: the pool table is registered into each ring, as libfuse does) and
releases every thread through one barrier together with one reading client per queue.

- Even rounds: every command is taken (no error CQE), every client gets its bytes, and a
  second read per queue, once the ring is ready, is served by that queue's own ring.
- Odd rounds: fusectl abort races the burst. Every thread's io_uring_enter returns, every
  client returns (its bytes or a teardown error), no thread or client is left blocked.
Every round ends with umount; fusectl must then list none of the round's connections.
Transports: those without zero-copy slots, a bufring or a kmbuf ring (its SCENARIOS entry
`lacks` them): the queue threads here set up neither (zero-copy's per-request buffer slots and
kmbuf's per-queue rings are made by the harness's engine on one thread; see owner-exits).
"""

from __future__ import annotations

import errno as E
import os
import threading
import time

from guest import mount as M
from guest.edge.clients import Client, read_file
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P
from guest.transports.base import SetupError, nr_possible_cpus
from guest.transports.engine import ENT, pow2, ud
from guest.uring.ring import Ring

DEAD = (E.ENOTCONN, E.ECONNABORTED, E.ECANCELED, E.EIO)
DEPTH = 2
_LOCAL = threading.local()


def _per_queue_rings(engine) -> None:  # noqa: ANN001
    """Give the engine one ring per queue: `ring` is the calling thread's own ring when it has
    one (queue_setup and sync_cmd from a queue thread), `ring_of(q)` queue q's ring."""
    base = type(engine)

    class PerQueue(base):  # type: ignore[misc, valid-type]
        @property
        def ring(self) -> Ring:
            return getattr(_LOCAL, "ring", None) or self._main_ring

        @ring.setter
        def ring(self, value: Ring) -> None:
            self._main_ring = value

        def ring_of(self, qid: int) -> Ring:
            return self.queue_rings[qid]

    engine._main_ring = engine.__dict__.pop("ring")
    engine.queue_rings = [None] * engine.nr_queues
    engine.__class__ = PerQueue


def _queue_thread(eng, q: int, gate: threading.Barrier, park: threading.Event, box: dict) -> None:  # noqa: ANN001
    """Queue q's thread: its ring, then (after the gate) its setup commands and REGISTERs in
    one submission; it stays alive until park is set (its exit would cancel the commands)."""
    try:
        ring = Ring(pow2(DEPTH + 16), cq_entries=pow2(2 * DEPTH + 64))
        if eng.name == "bufpool-registered":
            ring.register_buffers([(p.base, p.length) for p in eng.pools])
        _LOCAL.ring = eng.queue_rings[q] = ring
        gate.wait(10.0)
        t0 = time.monotonic()
        eng.queue_setup(q)
        for e in eng.entries[q * DEPTH:(q + 1) * DEPTH]:
            cmd, addr, length = eng.register_cmd(e)
            flags, bi = eng.fixed_args(e)
            ring.prep_uring_cmd(eng.devfd, P.URING_CMD_REGISTER, ud(ENT, e.gid), cmd, addr=addr,
                                length=length, cmd_flags=flags, buf_index=bi)
            e.live = True
        ring.submit()
        box["took"][q] = time.monotonic() - t0
    except SetupError as exc:
        box["refused"][q] = f"{exc.step} {E.errorcode.get(exc.errno, exc.errno)}"
    except BaseException as exc:  # noqa: BLE001 - reported by the round
        box["error"][q] = repr(exc)
        gate.abort()  # a thread that never reached the gate must not leave the others waiting
    finally:
        box["returned"][q] = True
    park.wait()  # set by the round's cleanup, whatever happened


def _read_all(srv: Served, nq: int, tag: str, ctx: Ctx) -> list[Client]:
    cpus = os.cpu_count() or 1
    return [Client(ctx, f"{tag}{q}", lambda q=q: read_file(srv.path(f"{tag}{q}")), cpu=q % cpus)
            for q in range(nq)]


def _round(ctx: Ctx, args, i: int, abort: bool) -> str | None:  # noqa: ANN001
    """One mount; None when the round was clean, else what went wrong."""
    nq = nr_possible_cpus()
    files = {f"{t}{q}".encode(): f"round {i} file {t}{q}\n".encode() * 64 for t in "ab" for q in range(nq)}
    srv = Served(ctx, f"burst{i}", transport=args.transport, queue_depth=DEPTH, files=files, start=False)
    eng = srv.engine
    eng.auto = True
    _per_queue_rings(eng)
    eng.alloc()
    minor = M.minor_of(srv.mnt)
    gate, park = threading.Barrier(nq + 1), threading.Event()
    box: dict = {"took": {}, "refused": {}, "error": {}, "returned": {}}
    threads = [threading.Thread(target=_queue_thread, args=(eng, q, gate, park, box), name=f"q{q}", daemon=True)
               for q in range(nq)]
    for t in threads:
        t.start()
    problems: list[str] = []
    try:
        problems += _burst(ctx, srv, i, abort, gate, box)
    finally:
        eng.extra_rings = [r for r in eng.queue_rings if r is not None]
        if abort or problems:
            srv.conn.abort()
        try:
            M.umount(srv.mnt)
        except OSError as exc:
            problems.append(f"umount: {E.errorcode.get(exc.errno, exc.errno)}")
            M.teardown(srv.mnt)
        park.set()
        for t in threads:
            t.join(5.0)
        srv.close_rings()
    gone = _connection_gone(minor)
    if not gone:
        problems.append(f"fusectl still lists connection {minor} 5 s after umount")
    cqes = sorted({E.errorcode.get(-res, res) for _, res, _ in eng.ent_errors})
    ctx.diag(f"round {i} ({'abort' if abort else 'serve'}): setup+REGISTER per queue "
             f"{', '.join(f'{t * 1000:.0f} ms' for t in box['took'].values()) or '-'}; "
             f"refused {box['refused'] or '-'}; entry error CQEs {cqes or '-'}; clients {box.get('clients', '-')}")
    return "; ".join(problems) or None


def _burst(ctx: Ctx, srv: Served, i: int, abort: bool, gate: threading.Barrier, box: dict) -> list[str]:
    """Release the queue threads (and abort, on an abort round), serve, judge: the problems."""
    eng, nq = srv.engine, srv.engine.nr_queues
    try:
        gate.wait(10.0)
    except threading.BrokenBarrierError:
        return [f"a queue thread failed before the burst: {box['error'] or 'barrier timeout'}"]
    if abort:
        srv.conn.abort()
    clients = _read_all(srv, nq, "a", ctx)
    end = time.monotonic() + min(10.0, ctx.left())
    while len(box["returned"]) < nq and time.monotonic() < end:
        time.sleep(0.01)
    if len(box["returned"]) < nq:
        return [f"queue threads still in the kernel after 10 s: {sorted(set(range(nq)) - set(box['returned']))}"]
    eng.extra_rings = [r for r in eng.queue_rings if r is not None]
    eng.live = sum(e.live for e in eng.entries)
    problems: list[str] = []
    srv.pump(min(15.0, ctx.left()), lambda: all(c.done() for c in clients))
    outs = [c.poll(0.0) for c in clients]
    box["clients"] = ",".join("bytes" if o and o.get("ok") else E.errorcode.get(o.get("errno"), "?") if o
                              else "blocked" for o in outs)
    stuck = [c.name for c, o in zip(clients, outs, strict=True) if o is None]
    if stuck:
        problems.append(f"clients blocked after 15 s: {stuck}")
    if box["error"]:
        problems.append(f"queue thread errors {box['error']}")
    if abort:
        bad = [o for o in outs if o and not o.get("ok") and o.get("errno") not in DEAD]
        wrong = [o for o in outs if o and o.get("ok") and not o["value"].startswith(f"round {i} ")]
        if bad or wrong:
            problems.append(f"after abort: unexpected errors {bad[:2]} or wrong bytes {wrong[:2]}")
    else:
        failed = [o for o in outs if o and not (o.get("ok") and o["value"].startswith(f"round {i} file a"))]
        if box["refused"] or eng.ent_errors or failed:
            problems.append(f"refused {box['refused']}, REGISTER error CQEs {eng.ent_errors[:4]}, "
                            f"clients {failed[:2]}")
        if not problems:
            problems += _served_by_own_ring(ctx, srv, nq)
    return problems


def _served_by_own_ring(ctx: Ctx, srv: Served, nq: int) -> list[str]:
    """A second read per queue once the ring is ready: each must be a READ on its queue."""
    before = len(srv.engine.log)
    clients = _read_all(srv, nq, "b", ctx)
    srv.pump(min(15.0, ctx.left()), lambda: all(c.done() for c in clients))
    outs = [c.poll(0.0) for c in clients]
    reads = {i["qid"] for i in srv.engine.log[before:] if i["op"] == "READ"}
    if any(not (o and o.get("ok")) for o in outs) or reads != set(range(nq)):
        return [f"after the ring was ready: clients {outs}, READs on queues {sorted(reads)} (want 0..{nq - 1})"]
    return []


def _connection_gone(minor: int | None) -> bool:
    end = time.monotonic() + 5.0
    while M.waiting(minor) is not None and time.monotonic() < end:
        time.sleep(0.05)
    return M.waiting(minor) is None


def register_burst(ctx: Ctx, args) -> None:  # noqa: ANN001
    """--iterations rounds (default 20), alternating a served burst and an aborted one."""
    rounds = args.iterations or 20
    results: dict[bool, list[str]] = {False: [], True: []}
    for i in range(rounds):
        if ctx.left() < 20:
            results[i % 2 == 1].append(f"round {i}: budget spent")
            break
        why = _round(ctx, args, i, abort=i % 2 == 1)
        if why:
            results[i % 2 == 1].append(f"round {i}: {why}")
    ctx.result("served_after_burst", not results[False],
               f"{(rounds + 1) // 2} rounds of one thread per queue registering at once right after "
               f"INIT: " + ("; ".join(results[False][:3]) or "every REGISTER taken, every queue serves"))
    ctx.result("abort_during_burst", not results[True],
               f"{rounds // 2} rounds with fusectl abort racing the burst: "
               + ("; ".join(results[True][:3]) or "every thread and client returned, umount worked"))
