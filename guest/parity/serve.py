"""One parity run: a fresh mount of the same file system, served over one transport, and a
call sequence run against it.

The file system keeps file data in one memfd per inode (`MemfdFs`), so the zero-copy
transports move data with READ_FIXED/WRITE_FIXED on a real fd while every other transport
reads and writes the same bytes: one in-memory file system for all. INIT answers with
max_readahead 0 (no asynchronous readahead: every READ belongs to the call that caused it)
and entry/attribute timeouts are 0. Faults are applied where replies are written: the
/dev/fuse reader (`ParityReader`) and the ring engine's commit (`parity_engine()`), both
from one `FaultPlan`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from guest import mount as M
from guest.counters import Counters
from guest.devfuse import DevFuseReader
from guest.edge.conn import Conn
from guest.edge.core import Ctx
from guest.fuse import proto as P
from guest.fuse import replies as R
from guest.fuse.memfd import MemfdFs
from guest.negotiate import negotiate
from guest.parity.client import SequenceClient
from guest.parity.faults import FaultPlan, corrupt, header_only
from guest.parity.gen import INITIAL, INITIAL_XATTRS, Config
from guest.parity.oracle import normalize
from guest.server import Server
from guest.transports import base

LINK_IN = struct.Struct("<Q")  # fuse_link_in: oldnodeid
#: Requests the kernel sends over /dev/fuse even when io-uring serves everything else.
DEVFUSE_ALWAYS = frozenset({"FORGET", "BATCH_FORGET", "INTERRUPT"})


def initial_fs() -> MemfdFs:
    """The file system every run starts from (gen.INITIAL): same names, sizes, bytes."""
    fs = MemfdFs()
    for path, size in INITIAL.items():
        parent = P.ROOT_ID
        *dirs, name = path.split("/")
        for d in dirs:
            parent = fs.lookup(parent, d.encode()).ino
        if size is None:
            fs.mkdir(parent, name.encode(), 0o755, 0, 0)
            continue
        attr, _ = fs.create(parent, name.encode(), 0o644, 0, 0, 0)
        fs.write(attr.ino, attr.ino, 0, bytes((i * 7 + len(path)) & 0xFF for i in range(size)))
        for xname, value in INITIAL_XATTRS.get(path, {}).items():
            fs.setxattr(attr.ino, xname.encode(), value, 0)
    return fs


class ParityServer(Server):
    """The dispatcher plus LINK (the generator's link calls)."""

    def __init__(self, fs: MemfdFs, counters: Counters, zero_copy_open: bool) -> None:
        super().__init__(fs, counters, zero_copy_open=zero_copy_open)
        self._table[P.Op.LINK] = self._link

    def _link(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        (old,) = LINK_IN.unpack(a[:LINK_IN.size])
        (name,), _ = P.split_names(r, 1)
        return R.pack_entry_out(self.fs.link(old, h.nodeid, name))


class ParityReader(DevFuseReader):
    """The /dev/fuse reader with the plan's faults. A reply the kernel refuses (write()
    fails) is recorded and followed by the correct reply, as a server that learns of its
    mistake would send it."""

    def __init__(self, fd: int, server: Server, counters: Counters, bufsize: int,
                 plan: FaultPlan) -> None:
        super().__init__(fd, server, counters, bufsize)
        self.plan = plan
        self.ops: Counter = Counter()

    def send(self, h: P.InHeader, error: int, data: bytes) -> None:
        name = P.op_name(h.opcode)
        self.ops[name] += 1  # every request with a reply (FORGET and INTERRUPT have none)
        hit = self.plan.take(name, error)
        if hit is None:
            return super().send(h, error, data)
        fault, rec = hit
        e2, u2, d2 = corrupt(fault, h.unique, error, data)
        try:
            os.write(self.fd, P.OUT_HEADER.pack(P.OUT_HEADER.size + len(d2), e2, u2) + d2)
            return None
        except OSError as exc:
            rec["refused"] = errno.errorcode.get(exc.errno, str(exc.errno))
        try:
            os.write(self.fd, P.pack_devfuse_reply(h.unique, error, data))
        except OSError as exc:
            rec["rewrite"] = errno.errorcode.get(exc.errno, str(exc.errno))
        return None


def parity_engine(cls: type) -> type:
    """Ring transport cls whose commits apply the plan's faults (`plan` set per instance)."""

    class Parity(cls):  # type: ignore[misc, valid-type]
        plan: FaultPlan | None = None

        def commit(self, e, error: int, data: bytes, payload_sz: int | None = None) -> None:  # noqa: ANN001
            hit = self.plan.take(P.op_name(e.op), error) if self.plan else None
            if hit is None:
                return super().commit(e, error, data, payload_sz)
            fault = hit[0]
            e2, u2, d2 = corrupt(fault, e.commit_id, error, data)
            if not header_only(fault):
                return super().commit(e, e2, d2, None if fault["kind"] != "errno" else payload_sz)
            super().commit(e, error, data, payload_sz)  # then the header lies (SQE not sent yet)
            P.OUT_HEADER.pack_into(self.hdr_of(e), e.hdr_off, P.OUT_HEADER.size + len(data), e2, u2)
            return None

    Parity.__name__ = f"Parity{cls.__name__}"
    return Parity


@dataclass
class Run:
    """One sequence on one transport: normalized results, raw results, what served them."""

    transport: str
    results: list[dict] = field(default_factory=list)
    raw: list[dict] = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    devfuse_ops: dict = field(default_factory=dict)
    setup_error: str | None = None
    seconds: float = 0.0


def _mount(ctx: Ctx, tag: str, cfg: Config, want_uring: bool) -> Conn:
    """Mount and answer INIT like the daemon, with max_readahead 0."""
    conn = Conn(ctx, tag)
    conn.mount()
    h, arg0 = conn.read_init()
    payload, conn.init = negotiate(arg0, want_uring, cfg.max_write, cfg.max_pages)
    payload = payload[:8] + struct.pack("<I", 0) + payload[12:]  # fuse_init_out.max_readahead
    os.write(conn.fd, P.pack_devfuse_reply(h.unique, 0, payload))
    return conn


def _engine_thread(cls: type, conn: Conn, server: Server, counters: Counters, plan: FaultPlan,
                   opts: base.Options, box: dict, ready: threading.Event) -> None:
    """Make, start and run the engine in one thread (its entries live as long as it does)."""
    eng = None
    try:
        eng = cls(conn.fd, server, counters, conn.init, opts)
        eng.plan = plan
        box["engine"] = eng
        eng.start()
    except Exception as exc:  # noqa: BLE001 - SetupError, OSError: reported by the run
        box["error"] = str(exc)
        ready.set()
        _close_engine(eng)
        return
    ready.set()
    try:
        eng.run()
    finally:
        _close_engine(eng)


def _close_engine(eng) -> None:  # noqa: ANN001
    if eng is None:
        return
    bufs = getattr(eng, "bufs", [])
    for q, r in enumerate((eng.ring, *eng.extra_rings)):
        with contextlib.suppress(Exception):
            r.close(*bufs[q:q + 1])
    with contextlib.suppress(OSError):
        os.close(eng.efd)


def run_sequence(ctx: Ctx, tag: str, transport: str, cfg: Config, calls: list[dict],
                 call_timeout: float, zero_copy_open: bool) -> Run:
    """Run calls on a fresh mount served over transport (legacy: /dev/fuse only)."""
    t0 = time.monotonic()
    run = Run(transport)
    legacy = transport == "legacy"
    plan = FaultPlan(calls)
    conn = _mount(ctx, tag, cfg, want_uring=not legacy)
    counters = Counters(transport)
    fs = initial_fs()
    server = ParityServer(fs, counters, zero_copy_open)
    client = SequenceClient(conn.mnt, calls)
    ctx.pids.append(client.pid)
    reader = ParityReader(conn.fd, server, counters, cfg.devfuse_bufsize(), plan)
    thread, box = None, {}
    try:
        reader.start()
        if not legacy:
            ready = threading.Event()
            cls = parity_engine(base.get(transport))
            opts = base.Options(queue_depth=2, pool_bufs=2)
            thread = threading.Thread(target=_engine_thread, name="parity-engine", daemon=True,
                                      args=(cls, conn, server, counters, plan, opts, box, ready))
            thread.start()
            ready.wait(min(60.0, ctx.left()))
            if "engine" not in box or "error" in box:
                run.setup_error = box.get("error", "the engine did not start in time")
                return run
        for c in calls:
            plan.begin(c["i"])
            out = client.step(min(call_timeout, ctx.left()))
            plan.begin(None)
            run.raw.append(out)
            run.results.append(normalize(out, plan.records(c["i"]), legacy))
            if "hung" in out or "died" in out:
                break
        return run
    finally:
        plan.begin(None)
        M.abort(conn.mnt)
        with contextlib.suppress(OSError):
            M.umount(conn.mnt, M.MNT_DETACH)
        if client.close():
            ctx.pids.remove(client.pid)  # reaped: cleanup must not signal a reused pid
        for t in (thread, reader):
            if t is not None:
                t.join(5.0)
        conn.close()
        fs.close()
        run.counters = counters.snapshot()
        run.devfuse_ops = dict(reader.ops)
        run.seconds = time.monotonic() - t0
