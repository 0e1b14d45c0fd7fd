"""Buffer starvation (S1, S3) and the uaddr=0 pool (S5).

Clients are pinned to CPU 0, so every request lands on queue 0 and its pool.
Waits are printed per request: `gap` is the time from the client's previous
answered request (or its start) to the delivery of this one.
"""

from __future__ import annotations

import errno
import os
import time

from guest import mount as M
from guest.edge.clients import Client, read_file, wait_all
from guest.edge.core import Ctx
from guest.edge.served import Served

PAYLOAD_OPS_HOLD = {"LOOKUP", "GETATTR", "OPEN", "READ", "STATX"}


def _files(n: int) -> dict[bytes, bytes]:
    return {f"f{i}".encode(): bytes([65 + i]) * (3000 + 17 * i) for i in range(n)}


def _waits(ctx: Ctx, srv: Served, clients: list[Client], t0: float) -> float:
    """Print each request's delivery gap; return the largest."""
    by_pid = {c.pid: c for c in clients}
    last: dict[int, float] = {}
    done_at = {cid: t for _, cid, t in srv.engine.answered}
    worst = 0.0
    for info in srv.engine.log:
        c = by_pid.get(info["pid"])
        start = last.get(info["pid"], c.t_start if c else t0)
        gap = info["t"] - start
        worst = max(worst, gap) if c else worst
        ans = done_at.get(info["commit_id"])
        if ans is not None:
            last[info["pid"]] = ans
        who = c.name if c else f"pid {info['pid']}"
        ctx.diag(f"req {info['op']:<8} {who:<4} entry {info['entry']} q{info['qid']} "
                 f"off {info['offset']:>7} at +{info['t'] - t0:6.3f}s gap {gap * 1000:8.1f} ms")
    for c in clients:
        r = c.result or {}
        lat = (r["t1"] - r["t0"]) if "t1" in r else float("nan")
        ctx.diag(f"client {c.name}: {'ok' if r.get('ok') else r.get('error')} "
                 f"latency {lat * 1000:.1f} ms")
    return worst


def starve_one_buffer(ctx: Ctx, args) -> None:  # noqa: ANN001
    """S1: 1 payload buffer, 4 entries, 4 readers on one queue; all complete, data intact. Over
    a 7.3 pool (bufpool, bufpool-registered), a bufring payload area or a kmbuf ring (--transport):
    the one buffer is known by its pool offset, its buf_id or its CQE buffer id."""
    files = _files(4)
    srv = Served(ctx, "s1", transport=args.transport, queue_depth=4, pool_bufs=1, files=files)
    pool = bool(getattr(srv.engine, "uses_pool", False))  # else the buffer id ("buf")
    t0 = time.monotonic()
    a = Client(ctx, "A", lambda: read_file(srv.path("f0")), cpu=0)
    if not srv.wait_held(1, 15.0):
        ctx.diag(f"nothing delivered: {srv.engine.log}")
        return
    first = srv.engine.held[0]
    b = Client(ctx, "B", lambda: read_file(srv.path("f1")), cpu=0)
    # path proof: B's request is in the kernel (fusectl waiting counts A's held one and B's)
    minor = M.minor_of(srv.mnt)
    srv.pump(5.0, lambda: (M.waiting(minor) or 0) >= 2)
    srv.pump(1.0)
    idle = srv.engine.depth - len(srv.engine.held)
    waiting = M.waiting(minor)
    ctx.result("second_waits_for_buffer", len(srv.engine.log) == 1 and (waiting or 0) >= 2,
               f"deliveries while the only buffer is held: {len(srv.engine.log)}, "
               f"{idle} entries idle on queue 0, fusectl waiting {waiting}"
               + ("" if (waiting or 0) >= 2 else " (not exercised: B's request never reached the kernel)"))
    n_before = len(srv.engine.log)
    srv.engine.auto = True
    srv.engine.answer(first)
    srv.pump(5.0, lambda: len(srv.engine.log) > n_before)
    nxt = srv.engine.log[n_before] if len(srv.engine.log) > n_before else None
    # The waiting request goes to the entry that committed, in the same buffer: pool offset
    # 0 (7.3 pools), or buffer 0 kept (kmbuf: no IORING_CQE_F_BUFFER) or named again.
    same_buffer = nxt and (nxt["offset"] == 0 if pool else nxt["buf"] in (None, 0))
    ctx.result("handed_to_committing_entry",
               bool(same_buffer and nxt["entry"] == srv.engine.infos.get(first.gid, {}).get("entry")
                    and nxt["pid"] == b.pid),
               f"first on entry {first.gid}, next {nxt} (B is pid {b.pid}: the waiting request)")
    more = [Client(ctx, n, (lambda p: lambda: read_file(p))(srv.path(f)), cpu=0)
            for n, f in (("C", "f2"), ("D", "f3"))]
    clients = [a, b, *more]
    srv.pump(min(60.0, ctx.left() - 5), lambda: all(c.done() for c in clients))
    ok = wait_all(clients, 0.1)
    ctx.result("all_complete", ok, f"done {[c.name for c in clients if c.done()]}")
    want = {"A": files[b"f0"], "B": files[b"f1"], "C": files[b"f2"], "D": files[b"f3"]}
    bad = [c.name for c in clients
           if not (c.result and c.result.get("ok")
                   and c.result["value"].encode("latin-1") == want[c.name])]
    ctx.result("data_intact", ok and not bad, f"wrong or failed: {bad}")
    key = "offset" if pool else "buf"
    offs = sorted({i[key] for i in srv.engine.log if i["op"] in PAYLOAD_OPS_HOLD and i[key] is not None})
    ctx.diag(f"{'pool offsets' if pool else 'buffer ids'} used on queue 0: {offs}")
    worst = _waits(ctx, srv, clients, t0)
    ctx.diag(f"largest per-request wait {worst * 1000:.1f} ms")


def starve_hol(ctx: Ctx, args) -> None:  # noqa: ANN001
    """S3: 1 buffer, 3 entries; a no-payload request behind a starved one; all complete."""
    files = _files(4)
    srv = Served(ctx, "s3", queue_depth=3, pool_bufs=1, files=files)
    eng = srv.engine
    t0 = time.monotonic()
    state = {"hold_payload": False}
    eng.auto = True
    eng.hold = lambda i: i["op"] == "FSYNC" or (state["hold_payload"]
                                                 and i["op"] in PAYLOAD_OPS_HOLD)
    gate_r, gate_w = os.pipe()

    def fsyncer(path: str, gated: bool):  # noqa: ANN202
        def fn() -> str:
            fd = os.open(path, os.O_RDWR)
            if gated:
                os.read(gate_r, 1)
            os.fsync(fd)
            os.close(fd)
            return "synced"
        return fn

    c3 = Client(ctx, "R3", fsyncer(srv.path("f3"), True), cpu=0)
    c0 = Client(ctx, "R0", fsyncer(srv.path("f0"), False), cpu=0)
    if not srv.pump(15.0, lambda: any(i["op"] == "FSYNC" for i in eng.log)):
        ctx.diag(f"R0 fsync never arrived: {eng.log}")
        return
    srv.pump(1.0)  # let R3's OPEN complete
    state["hold_payload"] = True
    c1 = Client(ctx, "R1", lambda: os.stat(srv.path("f1")).st_size, cpu=0)
    srv.pump(10.0, lambda: len(eng.held) >= 2)
    c2 = Client(ctx, "R2", lambda: os.stat(srv.path("f2")).st_size, cpu=0)
    srv.pump(1.0)
    n = len(eng.log)
    ctx.diag(f"held {[eng.infos[e.gid]['op'] for e in eng.held]}, deliveries so far {n}")
    os.write(gate_w, b"g")
    t_r3 = time.monotonic()
    srv.pump(1.5, lambda: sum(i["op"] == "FSYNC" for i in eng.log) >= 2)
    r3_early = sum(i["op"] == "FSYNC" for i in eng.log) >= 2
    ctx.diag(f"R3 (fsync) delivered while R2 starves: {r3_early}")
    r1 = next((e for e in eng.held if eng.infos[e.gid]["op"] != "FSYNC"), None)
    state["hold_payload"] = False
    if r1 is not None:
        eng.answer(r1)
    srv.pump(1.5, lambda: sum(i["op"] == "FSYNC" for i in eng.log) >= 2)
    ctx.diag(f"after committing R1: R3 delivered "
             f"{sum(i['op'] == 'FSYNC' for i in eng.log) >= 2}")
    eng.hold = None
    for e in list(eng.held):
        eng.answer(e)
    clients = [c0, c1, c2, c3]
    srv.pump(min(60.0, ctx.left() - 5), lambda: all(c.done() for c in clients)
             and not eng.held, )
    for e in list(eng.held):
        eng.answer(e)
    srv.pump(min(30.0, ctx.left() - 5), lambda: all(c.done() for c in clients))
    ok = wait_all(clients, 0.1)
    ctx.result("all_complete", ok, f"done {[c.name for c in clients if c.done()]}")
    want = {"R0": "synced", "R3": "synced", "R1": len(files[b"f1"]), "R2": len(files[b"f2"])}
    bad = [c.name for c in clients if not (c.result and c.result.get("ok")
                                           and c.result["value"] == want[c.name])]
    ctx.result("results_intact", ok and not bad, f"wrong or failed: {bad}")
    r3 = [i for i in eng.log if i["op"] == "FSYNC"][1:2]
    if r3:
        ctx.diag(f"R3 waited {(r3[0]['t'] - t_r3) * 1000:.1f} ms for delivery "
                 f"(head-of-line behind R2)")
    _waits(ctx, srv, clients, t0)


def bufpool_uaddr_zero(ctx: Ctx, args) -> None:  # noqa: ANN001
    """S5: ADD_BUFPOOL uaddr=0 should be refused; on 7.3.4 it is accepted and starves."""
    srv = Served(ctx, "s5", queue_depth=2, pool_bufs=1, files=_files(1), zero_pool_qid=0)
    res = getattr(srv.engine, "zero_pool_res", None)
    ctx.result("uaddr_zero_rejected", res is not None and res < 0,
               f"ADD_BUFPOOL uaddr=0 len={srv.engine.payload_size} CQE res {res} "
               f"(expected -EINVAL or -EFAULT)")
    srv.engine.auto = True
    a = Client(ctx, "A", lambda: os.stat(srv.path("f0")).st_size, cpu=0)
    srv.pump(10.0, a.done)
    ctx.diag(f"first client: {a.poll(0.0)}")
    b = Client(ctx, "B", lambda: os.stat(srv.path("f0")).st_size, cpu=0)
    srv.pump(10.0, b.done)
    out = b.poll(0.0)
    ctx.result("no_permanent_starvation", out is not None,
               f"second client after 10 s: {out or 'still waiting, state ' + b.state()}")
    srv.conn.abort()
    gone = wait_all([a, b], 10.0)
    ctx.result("abort_recovers", gone, f"clients: {a.poll(0.0)} {b.poll(0.0)}; "
               f"errno ENOTCONN={errno.ENOTCONN}")
