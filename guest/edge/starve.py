"""Buffer starvation (S1, S3) and the uaddr=0 pool (S5).

Clients are pinned to CPU 0, so every request lands on queue 0 and its pool.
Waits are printed per request: `gap` is the time from the client's previous
answered request (or its start) to the delivery of this one.
"""

from __future__ import annotations

import errno
import os
import select
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


#: starve-hol: how long R2 (the payload request ahead of R3) stays held once delivered, s: the
#: head-of-line wait R3 sees on a kernel that leaves a free entry idle behind a starved head.
HOL_HOLD = 1.0
#: How long after R2's commit (the one buffer's return) R3 may take to reach the server, s.
HOL_GRACE = 5.0
HOL_CASES = ("head_of_line_released", "all_complete", "results_intact")


def _fsyncer(path: str, gate_r: int = -1, ready_w: int = -1):  # noqa: ANN202
    """Client body: open path read-write (LOOKUP, OPEN), report b"o" on ready_w, wait for a byte
    on gate_r (when given), fsync (one FSYNC: no payload), close; returns "synced"."""
    def fn() -> str:
        fd = os.open(path, os.O_RDWR)
        if ready_w >= 0:
            os.write(ready_w, b"o")
        if gate_r >= 0:
            os.read(gate_r, 1)
        os.fsync(fd)
        os.close(fd)
        return "synced"
    return fn


def _stat(path: str):  # noqa: ANN202
    """Client body: stat path (one LOOKUP: a payload request); returns st_size."""
    return lambda: os.stat(path).st_size


def hol_setup(held: list[str], depth: int, waiting: int | None, early: list[str]) -> str:
    """starve-hol's path proof before F's commit: '' when the three held requests fill the
    queue's depth (two FSYNCs, R1's LOOKUP with the one buffer), fusectl counts R2 and R3 in
    flight besides them (waiting >= 5) and neither reached the server (early: the names of
    those that did); else 'not exercised: ...'."""
    if sorted(held) != ["FSYNC", "FSYNC", "LOOKUP"] or depth != 3:
        return f"not exercised: held {sorted(held)} on a queue of depth {depth}, not two FSYNCs and R1's LOOKUP"
    if early:
        return f"not exercised: {' and '.join(early)} reached the server while every entry was held"
    if (waiting or 0) < 5:
        return f"not exercised: fusectl waiting {waiting}: R2 and R3 were not both queued in the kernel"
    return ""


def hol_verdict(t: dict[str, float | None], entries: dict[str, int | None], grace: float) -> tuple[bool, str]:
    """Case head_of_line_released. t: monotonic times of F's, R1's and R2's commits (f_commit,
    r1_commit, r2_commit: None when not made) and of R2's and R3's deliveries (r2_at, r3_at:
    None when none); entries: the entry that took R3 and the one F freed ("r3", "f"). R3 must
    reach the server no later than grace s after R2's commit (the buffer's return); R2 must have
    waited for R1's commit (else `not exercised`)."""
    if t["r2_at"] is None:
        return False, "R2 was never delivered after R1's commit returned the buffer"
    if t["r2_at"] < t["r1_commit"]:
        return False, "not exercised: R2 was delivered before R1's commit (it never waited for the buffer)"
    r3, r2c = t["r3_at"], t["r2_commit"]
    if r3 is None or (r2c is not None and r3 > r2c + grace):
        late = "NOT DELIVERED" if r3 is None else f"delivered only {r3 - r2c:.1f} s"
        return False, f"R3 (FSYNC) {late} {grace:.0f} s after R2's commit returned the buffer: a stall"
    on = f"entry {entries['r3']}" + (" (the one F freed)" if entries["r3"] == entries["f"] else "")
    if r3 < t["r1_commit"]:
        return True, (f"no head-of-line wait: R3 delivered on {on} {(r3 - t['f_commit']) * 1000:.0f} ms after "
                      "F's commit, ahead of the starved R2")
    if r2c is None or r3 < r2c:
        return True, f"R3 delivered on {on} {(r3 - t['r1_commit']) * 1000:.0f} ms after R1's commit, while R2 was held"
    return True, (f"head-of-line wait: R3 stayed queued {r2c - t['r1_commit']:.2f} s after R1's commit with F's entry "
                  f"{entries['f']} free, and reached the server on {on} {(r3 - r2c) * 1000:.0f} ms after R2's commit")


def starve_hol(ctx: Ctx, args) -> None:  # noqa: ANN001
    """S3: 1 buffer, 3 entries; a no-payload request queued behind a starved payload request.

    On queue 0 (every client on CPU 0) R0's and F's FSYNCs (no payload) hold two entries and R1's
    LOOKUP holds the third with the pool's only buffer; R2's LOOKUP (payload) is then queued,
    and R3's FSYNC behind it (no entry free: 7.3.4 fs/fuse/dev_uring.c:1821). F is committed:
    its entry finds R2 at the head with no buffer and stays idle (fuse_uring_ent_assign_req
    looks at the head only, dev_uring.c:1138-1142), R3 queued behind. R1 is committed: its
    entry keeps the buffer and takes R2 (dev_uring.c:1017-1036), held HOL_HOLD s (the
    head-of-line wait: R3 heads the queue, an entry idle), then committed: the buffer returns.
    R3 must reach the server by then, at the latest HOL_GRACE s after that commit (7.3.4: R2's
    entry recycles the buffer for a request without payload and takes it, dev_uring.c:1032-1033
    and 1324-1325): case head_of_line_released. Every client then completes with its own
    result (all_complete, results_intact).

    Path proof of the three cases (`not exercised: ...` otherwise, hol_setup): the queue's three
    entries held two FSYNCs and R1's LOOKUP; fusectl `waiting` >= 5 with neither R2 nor R3 at the
    server (both queued in the kernel, R2 first); R2 reached the server only after R1's commit."""
    files = _files(5)
    srv = Served(ctx, "s3", queue_depth=3, pool_bufs=1, files=files)
    eng = srv.engine
    eng.auto = True
    hold: set[tuple[int, str]] = set()  # (pid, op): the next such request is held

    def held_once(info: dict) -> bool:
        key = (info["pid"], info["op"])
        if key in hold:
            hold.discard(key)
            return True
        return False

    eng.hold = held_once
    (gate_r, gate_w), (ready_r, ready_w) = os.pipe(), os.pipe()
    for fd in (gate_r, gate_w, ready_r, ready_w):
        ctx.closers.append(lambda fd=fd: os.close(fd))
    minor = M.minor_of(srv.mnt)
    r3 = Client(ctx, "R3", _fsyncer(srv.path("f3"), gate_r, ready_w), cpu=0)
    opened = srv.pump(15.0, lambda: bool(select.select([ready_r], [], [], 0)[0]))
    cs = {"R3": r3}
    for name, f in (("R0", "f0"), ("F", "f4")):
        cs[name] = Client(ctx, name, _fsyncer(srv.path(f)), cpu=0)
        hold.add((cs[name].pid, "FSYNC"))
    srv.pump(15.0, lambda: len(eng.held) >= 2)
    cs["R1"] = Client(ctx, "R1", _stat(srv.path("f1")), cpu=0)
    hold.add((cs["R1"].pid, "LOOKUP"))
    srv.pump(10.0, lambda: len(eng.held) >= 3)
    cs["R2"] = Client(ctx, "R2", _stat(srv.path("f2")), cpu=0)
    hold.add((cs["R2"].pid, "LOOKUP"))
    srv.pump(5.0, lambda: (M.waiting(minor) or 0) >= 4)  # R2's request in the kernel before R3's
    srv.pump(0.2)
    os.write(gate_w, b"g")
    srv.pump(5.0, lambda: (M.waiting(minor) or 0) >= 5)
    srv.pump(0.3)
    op = {"R1": "LOOKUP", "R2": "LOOKUP", "R3": "FSYNC"}

    def info(name: str) -> dict | None:
        """The request of client `name` this scenario is about, once it reached the server."""
        return next((i for i in eng.log if i["pid"] == cs[name].pid and i["op"] == op[name]), None)

    def at(name: str) -> float | None:
        i = info(name)
        return i["t"] if i else None

    def holding(name: str):  # noqa: ANN202
        return next((e for e in eng.held if eng.infos[e.gid]["pid"] == cs[name].pid), None)

    who = {c.pid: n for n, c in cs.items()}
    waiting = M.waiting(minor)
    missing = ("" if opened else "not exercised: R3 never opened its file") or hol_setup(
        [eng.infos[e.gid]["op"] for e in eng.held], eng.depth, waiting, [n for n in ("R2", "R3") if info(n)])
    ctx.diag(f"held {[(who.get(eng.infos[e.gid]['pid']), eng.infos[e.gid]['op'], e.gid) for e in eng.held]}, "
             f"fusectl waiting {waiting}, deliveries so far {len(eng.log)}")
    t: dict[str, float | None] = dict.fromkeys(("f_commit", "r1_commit", "r2_commit"))
    f_entry, r1_entry = holding("F"), holding("R1")
    if not (missing or (f_entry and r1_entry)):
        missing = f"not exercised: F's FSYNC or R1's LOOKUP was not among the held requests ({who})"
    if not missing:
        t["f_commit"] = time.monotonic()
        eng.answer(f_entry)  # its entry finds R2 at the head, with no buffer
        srv.pump(HOL_HOLD, lambda: info("R3") is not None)
        t["r1_commit"] = time.monotonic()
        eng.answer(r1_entry)  # its entry keeps the buffer: R2
        srv.pump(5.0, lambda: info("R2") is not None)
        srv.pump(HOL_HOLD, lambda: info("R3") is not None)
        r2_entry = holding("R2")
        if r2_entry is not None:
            t["r2_commit"] = time.monotonic()
            eng.answer(r2_entry)  # the buffer returns
        srv.pump(HOL_GRACE, lambda: info("R3") is not None)
    t["r2_at"], t["r3_at"] = at("R2"), at("R3")
    r3_info = info("R3")
    entries = {"r3": r3_info["entry"] if r3_info else None, "f": f_entry.gid if f_entry else None}
    ok, why = (False, missing) if missing else hol_verdict(t, entries, HOL_GRACE)
    ctx.result("head_of_line_released", ok, why)
    missing = missing or (why if why.startswith("not exercised") else "")
    hold.clear()
    eng.hold = None
    for e in list(eng.held):
        eng.answer(e)
    clients = list(cs.values())
    srv.pump(min(60.0, ctx.left() - 5), lambda: all(c.done() for c in clients))
    done = wait_all(clients, 0.1)
    proof = f"; {missing}" if missing else ""
    ctx.result("all_complete", done and not missing, f"done {[n for n, c in cs.items() if c.done()]}{proof}")
    want = {"R0": "synced", "F": "synced", "R3": "synced", "R1": len(files[b"f1"]), "R2": len(files[b"f2"])}
    bad = [n for n, c in cs.items() if not (c.result and c.result.get("ok") and c.result["value"] == want[n])]
    ctx.result("results_intact", done and not bad and not missing, f"wrong or failed: {bad}{proof}")
    _waits(ctx, srv, clients, t["f_commit"] or time.monotonic())


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
