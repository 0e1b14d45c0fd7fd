"""guest.transports.strict: each field the kernel writes for a ring request, checked against
what the request implies. Requests are written into real transports' header memory the way
the kernel writes them (in_header at 0, the first in-arg at 128, ent_in_out at 256); each check
has a request that passes and, per kind of wrong field, one that fails."""

from __future__ import annotations

import mmap
import struct

import pytest

from guest.checks import counter_checks
from guest.checks.context import Skip
from guest.counters import Counters
from guest.edge import core
from guest.fuse import proto as P
from guest.fuse.fs import MemoryFs
from guest.negotiate import Init
from guest.server import Server
from guest.transports import base, strict
from guest.transports.engine import ENT, Entry, ud
from guest.transports.pool import Pool
from guest.transports.strict import Strict
from guest.uring import abi

Op = P.Op
ENT_IN_OUT = struct.Struct("<QQIIQ")
BUF = 8192
F_BUF = abi.CQE_F_BUFFER


def _init(reply_flags: int = 0) -> Init:
    return Init(7, 46, 0, 0, 46, reply_flags, 0, 131072, 32, BUF, True)


def _engine(name: str, nbufs: int = 4, zc_open: bool = False, reply_flags: int = 0):  # noqa: ANN202
    """A transport of that name with its header memory, pools and strict server: no kernel."""
    cls = base.get(name)
    t = cls.__new__(cls)
    t.counters = Counters(name)
    t.init, t.payload_size, t.depth, t.nr_queues = _init(reply_flags), BUF, 2, 2
    t.entries = [Entry(i, i // 2, i % 2) for i in range(4)]
    t.hdr = mmap.mmap(-1, 4 * 512)
    t.server = Server(MemoryFs(), t.counters, zero_copy_open=zc_open)
    if t.buffer_field == "offset":
        t.pools = [Pool(nbufs, BUF) for _ in range(2)]
    else:
        t.nbufs, t.buf_size = nbufs, BUF
    t.strict = t.counters.strict = Strict(t)
    return t


def _put(t, e: Entry, op: int, unique: int = 0x10, in_len: int | None = None,  # noqa: ANN001
         payload_sz: int = 0, word: int = 0, flags: int = 0, commit_id: int | None = None,
         reserved: int = 0, arg0: bytes = b"", extlen: int = 0) -> None:
    """Write a request into entry e's header slot as the kernel does."""
    n0 = strict.ARG0.get(op, 0)
    in_len = 40 + n0 + payload_sz if in_len is None else in_len
    P.IN_HEADER.pack_into(t.hdr, e.hdr_off, in_len, op, unique, 1, 0, 0, 1, extlen, 0)
    t.hdr[e.hdr_off + 128:e.hdr_off + 128 + len(arg0)] = arg0
    ENT_IN_OUT.pack_into(t.hdr, e.hdr_off + 256, flags, unique if commit_id is None else commit_id,
                         payload_sz, word, reserved)


def _write_in(size: int) -> bytes:
    return P.WRITE_IN.pack(1, 0, size, 0, 0, 0, 0)


def _deliver(t, e: Entry, op: int, cflags: int = 0, **kw) -> list[str]:  # noqa: ANN001
    """Deliver one request; the kinds of mismatch it added."""
    before = dict(t.strict.kinds)
    _put(t, e, op, **kw)
    t.strict.delivered(e, cflags)
    return sorted(k for k, n in t.strict.kinds.items() if n > before.get(k, 0))


# -- right requests, every generation ---------------------------------------------------------
@pytest.mark.parametrize("name", ["iovec", "bufpool", "bufpool-registered", "zero-copy", "bufring",
                                  "kmbuf", "kmbuf-zero-copy"])
def test_right_requests_pass_on_every_transport(name: str) -> None:
    t = _engine(name)
    e = t.entries[1]
    buf = {"none": 0, "offset": 2 * BUF, "buf_id": 2, "cqe": 0}[t.buffer_field]
    cq = F_BUF | (2 << abi.CQE_BUFFER_SHIFT) if t.buffer_field == "cqe" else 0
    assert _deliver(t, e, Op.LOOKUP, cq, payload_sz=6, word=buf) == []
    t.strict.committed(e)
    assert _deliver(t, e, Op.FLUSH, unique=0x12, arg0=bytes(24)) == []
    t.strict.committed(e)
    if name != "zero-copy":  # a copied WRITE: its data is the payload
        assert _deliver(t, e, Op.WRITE, cq, unique=0x14, payload_sz=100, word=buf,
                        arg0=_write_in(100)) == []
    r = t.counters.snapshot()["strict"]
    assert r["violations"] == 0 and r["checked"] >= 2 and r["first"] is None


def test_setxattr_first_arg_follows_fuse_setxattr_ext() -> None:
    t = _engine("bufpool")
    assert _deliver(t, t.entries[0], Op.SETXATTR, in_len=40 + 8 + 20, payload_sz=20) == []
    t = _engine("bufpool", reply_flags=strict.SETXATTR_EXT)
    assert _deliver(t, t.entries[0], Op.SETXATTR, in_len=40 + 8 + 20, payload_sz=20) == ["payload_sz"]
    assert _deliver(t, t.entries[2], Op.SETXATTR, in_len=40 + 16 + 20, payload_sz=20) == []


# -- unique, opcode, commit_id, reserved ------------------------------------------------------
def test_unique_zero_or_odd_fails_but_a_notify_reply_may_be_odd() -> None:
    t = _engine("iovec")
    assert _deliver(t, t.entries[0], Op.GETATTR, unique=0) == ["unique"]
    assert _deliver(t, t.entries[0], Op.GETATTR, unique=0x11) == ["unique"]
    assert _deliver(t, t.entries[0], Op.NOTIFY_REPLY, unique=0x11, payload_sz=40 + 4096) == []


def test_a_devfuse_only_opcode_on_the_ring_fails() -> None:
    t = _engine("iovec")
    assert _deliver(t, t.entries[0], Op.FORGET) == ["opcode"]
    assert _deliver(t, t.entries[0], Op.INTERRUPT) == ["opcode"]


def test_commit_id_must_be_the_unique() -> None:
    t = _engine("bufpool")
    assert _deliver(t, t.entries[0], Op.GETATTR, unique=0x20, commit_id=0x20) == []
    assert _deliver(t, t.entries[0], Op.GETATTR, unique=0x20, commit_id=0x22) == ["commit_id"]


def test_reserved_must_be_zero() -> None:
    t = _engine("kmbuf")
    assert _deliver(t, t.entries[0], Op.FLUSH, reserved=1) == ["reserved"]


# -- payload_sz -------------------------------------------------------------------------------
def test_payload_sz_against_in_header_len_and_the_first_arg() -> None:
    t = _engine("bufpool")
    e = t.entries[0]
    assert _deliver(t, e, Op.LOOKUP, payload_sz=6) == []  # zero-size arg0: the name is payload
    assert _deliver(t, e, Op.LOOKUP, in_len=46, payload_sz=5) == ["payload_sz"]
    assert _deliver(t, e, Op.READ, payload_sz=0) == []
    assert _deliver(t, e, Op.READ, in_len=80, payload_sz=40) == ["payload_sz"]  # fuse_read_in is op_in
    assert _deliver(t, e, Op.MKDIR, payload_sz=4, extlen=1) == ["payload_sz"]  # ext bigger than payload
    assert _deliver(t, e, Op.MKDIR, payload_sz=12, extlen=1) == []


def test_write_payload_sz_is_its_size_and_an_unknown_op_is_bounded() -> None:
    t = _engine("iovec")
    e = t.entries[0]
    assert _deliver(t, e, Op.WRITE, payload_sz=100, arg0=_write_in(100)) == []
    assert _deliver(t, e, Op.WRITE, payload_sz=100, arg0=_write_in(99)) == ["payload_sz"]
    assert _deliver(t, e, 48, in_len=80, payload_sz=40) == []  # SETUPMAPPING: arg0 unknown here
    assert _deliver(t, e, 48, in_len=80, payload_sz=41) == ["payload_sz"]


# -- flags -----------------------------------------------------------------------------------
def test_7_3_zero_copy_flag_exactly_on_read_and_write_of_zero_copy_files() -> None:
    t = _engine("zero-copy", zc_open=True)
    e = t.entries[0]
    zc = P.URING_ENT_ZERO_COPY
    assert _deliver(t, e, Op.READ, flags=zc) == []  # no buffer: offset 0
    assert _deliver(t, e, Op.WRITE, flags=zc, payload_sz=4096, word=BUF, arg0=_write_in(4096)) == []
    t.strict.committed(e)
    assert _deliver(t, e, Op.READ) == ["flags"]  # missing on a zero-copy file
    assert _deliver(t, e, Op.GETATTR, flags=zc) == ["flags"]
    assert _deliver(t, e, Op.GETATTR, flags=2) == ["flags"]  # unknown bit
    plain = _engine("zero-copy", zc_open=False)
    assert _deliver(plain, plain.entries[0], Op.READ, flags=zc) == ["flags"]
    assert _deliver(plain, plain.entries[0], Op.READ, word=BUF) == []


def test_zero_copied_write_counts_its_pages_in_payload_sz() -> None:
    """7.3 fuse_uring_args_to_ring adds the page arg back; a kernel that does not shows here."""
    t = _engine("zero-copy", zc_open=True)
    zc = P.URING_ENT_ZERO_COPY
    assert _deliver(t, t.entries[0], Op.WRITE, flags=zc, in_len=80 + 4096, payload_sz=0, word=BUF,
                    arg0=_write_in(4096)) == ["payload_sz"]


def test_generations_a_b_d_write_no_flags() -> None:
    for name in ("iovec", "bufring", "kmbuf-zero-copy"):
        t = _engine(name)
        assert _deliver(t, t.entries[0], Op.FLUSH, flags=1) == ["flags"], name


# -- the u32 at 20 and the buffers ------------------------------------------------------------
def test_padding_must_be_zero() -> None:
    t = _engine("iovec")
    assert _deliver(t, t.entries[0], Op.GETATTR, word=4096) == ["padding"]
    t = _engine("kmbuf")
    assert _deliver(t, t.entries[0], Op.FLUSH, word=1) == ["padding"]
    t = _engine("bufring")
    assert _deliver(t, t.entries[0], Op.GETATTR, word=(1 << 16) | 1) == ["padding"]


def test_pool_offset_inside_the_pool_and_only_with_a_payload() -> None:
    t = _engine("bufpool-registered", nbufs=4)
    e = t.entries[0]
    assert _deliver(t, e, Op.FLUSH, word=BUF) == ["buffer"]
    assert _deliver(t, e, Op.GETATTR, word=BUF + 8) == ["buffer_range"]  # not a buffer's start
    assert _deliver(t, e, Op.GETATTR, word=4 * BUF) == ["buffer_range"]  # past the registered area
    assert _deliver(t, e, Op.GETATTR, word=3 * BUF) == []


def test_bufring_buf_id_below_the_pool_and_zero_without_payload() -> None:
    t = _engine("bufring", nbufs=2)
    e = t.entries[0]
    assert _deliver(t, e, Op.RELEASE, word=1) == ["buffer"]
    assert _deliver(t, e, Op.GETATTR, word=2) == ["buffer_range"]
    assert _deliver(t, e, Op.GETATTR, word=1) == []


def test_kmbuf_buffer_flag_only_with_payload_and_kept_otherwise() -> None:
    t = _engine("kmbuf", nbufs=2)
    e = t.entries[0]
    sel = F_BUF | (1 << abi.CQE_BUFFER_SHIFT)
    assert _deliver(t, e, Op.GETATTR) == ["buffer"]  # payload, no flag, nothing kept
    assert _deliver(t, e, Op.FSYNC, sel, arg0=bytes(16)) == ["buffer"]  # a buffer without payload
    assert _deliver(t, e, Op.GETATTR, F_BUF | (2 << abi.CQE_BUFFER_SHIFT)) == ["buffer_range"]
    assert _deliver(t, e, Op.GETATTR, sel) == []
    t.strict.committed(e)
    assert _deliver(t, e, Op.GETATTR) == []  # kept buffer 1: no flag this time
    assert t.strict.held[e.gid] == (t.strict.ledger(0), 1)


def test_kmbuf_zero_copy_reads_take_no_buffer_writes_do() -> None:
    t = _engine("kmbuf-zero-copy")
    e = t.entries[0]
    sel = F_BUF | (0 << abi.CQE_BUFFER_SHIFT)
    assert _deliver(t, e, Op.READ, sel) == ["buffer"]
    assert _deliver(t, e, Op.READDIR) == []
    assert _deliver(t, e, Op.WRITE, sel, payload_sz=4096, arg0=_write_in(4096)) == []


def test_a_buffer_held_by_an_uncommitted_request_is_not_handed_out_again() -> None:
    for name, word, cq in (("bufpool", BUF, 0), ("bufring", 1, 0), ("kmbuf", 0, F_BUF | (1 << 16))):
        t = _engine(name)
        a, b, other_queue = t.entries[0], t.entries[1], t.entries[2]
        assert _deliver(t, a, Op.GETATTR, cq, word=word) == [], name
        assert _deliver(t, other_queue, Op.GETATTR, cq, word=word) == [], name  # its own pool
        assert _deliver(t, b, Op.GETATTR, cq, word=word) == ["buffer_shared"], name
        t.strict.committed(b)
        t.strict.committed(a)
        assert _deliver(t, b, Op.GETATTR, cq, word=word) == [], name  # after the commit: fine


def test_buffers_out_plus_free_is_the_pool_after_every_commit() -> None:
    t = _engine("bufpool", nbufs=4)
    e = t.entries[0]
    _deliver(t, e, Op.GETATTR, word=BUF)
    t.strict.committed(e)
    led = t.strict.ledger(0)
    assert not t.strict.kinds and led.free == {0, 1, 2, 3} and not led.out
    _deliver(t, e, Op.GETATTR, word=BUF)
    assert led.out == {1: e.gid} and led.free == {0, 2, 3}
    led.free.discard(3)  # a buffer lost from the books
    t.strict.committed(e)
    assert t.strict.kinds == {"pool_sum": 1}


# -- the finding and where it surfaces --------------------------------------------------------
def test_the_first_mismatch_is_kept_with_its_request_dumped() -> None:
    t = _engine("bufpool")
    _deliver(t, t.entries[1], Op.GETATTR, unique=0x40, commit_id=0x42, arg0=bytes(range(16)))
    _deliver(t, t.entries[1], Op.GETATTR, unique=0)
    r = t.counters.snapshot()["strict"]
    assert r["violations"] == 2 and r["kinds"] == {"commit_id": 1, "unique": 1}
    first = r["first"]
    assert "bufpool queue 0 entry 1: GETATTR [commit_id] commit_id 0x42 != in_header.unique 0x40" in first
    assert "in_header len=56 opcode=3 unique=0x40" in first and "offset=0x0" in first
    assert "op_in 000102030405060708090a0b0c0d0e0f" in first and "\n" not in first


def test_a_crash_in_a_check_is_a_finding_not_a_pass() -> None:
    t = _engine("bufpool")
    t.pools = []  # buffer_area() now raises
    assert _deliver(t, t.entries[0], Op.GETATTR, word=BUF) == ["strict_error"]


def test_the_guest_check_case_fails_with_the_dump_and_needs_traffic() -> None:
    t = _engine("bufpool")
    with pytest.raises(AssertionError, match="not exercised"):
        counter_checks.strict_server(t.counters.snapshot(), "bufpool", {})
    _deliver(t, t.entries[0], Op.GETATTR, word=BUF)
    counter_checks.strict_server(t.counters.snapshot(), "bufpool", {})
    _deliver(t, t.entries[1], Op.GETATTR, word=BUF)
    with pytest.raises(AssertionError, match=r"1 mismatch.*first: bufpool queue 0 entry 1: GETATTR"):
        counter_checks.strict_server(t.counters.snapshot(), "bufpool", {})
    with pytest.raises(Skip):
        counter_checks.strict_server(Counters("legacy").snapshot(), "legacy", {})


def test_every_edge_scenario_reports_strict_server(capsys) -> None:  # noqa: ANN001
    def clean(ctx, args) -> None:  # noqa: ANN001
        t = _engine("kmbuf")
        _deliver(t, t.entries[0], Op.GETATTR, F_BUF)
        ctx.result("a", True)

    def lying_kernel(ctx, args) -> None:  # noqa: ANN001
        t = _engine("bufring")
        _deliver(t, t.entries[0], Op.RELEASE, word=1)
        ctx.result("a", True)

    core.run("fake", ["a"], clean, None, 30.0)
    out = capsys.readouterr().out
    assert "ok 2 fake.strict_server\n" in out
    assert "# strict_server: 1 ring requests (kmbuf): every field as the request implies" in out
    def skipped(ctx, args) -> None:  # noqa: ANN001
        t = _engine("kmbuf")
        _deliver(t, t.entries[0], Op.GETATTR, F_BUF)
        ctx.result("a", None, reason="kernel lacks it")

    core.run("fake", ["a"], skipped, None, 30.0)
    out = capsys.readouterr().out
    assert "ok 2 fake.strict_server # SKIP every case of the scenario was skipped" in out
    rc = core.run("fake", ["a"], lying_kernel, None, 30.0)
    out = capsys.readouterr().out
    assert "not ok 2 fake.strict_server" in out and rc != 0
    assert "# strict_server: bufring: 1 mismatch(es) in 1 ring requests {'buffer': 1}; first: " \
           "bufring queue 0 entry 0: RELEASE [buffer] buf_id 1 on RELEASE, which has no payload" in out


def test_the_engine_checks_each_request_it_serves_and_each_commit() -> None:
    """RingEngine.on_cqe -> strict, then serve -> commit -> strict (a real bufpool engine and
    io_uring; the COMMIT SQE is queued, never submitted)."""
    cls = base.get("bufpool")
    counters = Counters("bufpool")
    try:
        eng = cls(-1, Server(MemoryFs(), counters), counters, _init(), base.Options(queue_depth=2))
    except OSError as exc:
        pytest.skip(f"io_uring unavailable on this host: {exc}")
    eng.alloc()
    e = eng.entries[0]
    _put(eng, e, Op.GETATTR, unique=0x30, word=BUF, arg0=bytes(16))
    eng.on_cqe(ud(ENT, e.gid), 0, 0)
    assert eng.strict.checked == 1 and not eng.strict.kinds
    assert e.gid not in eng.strict.held  # the reply's commit let the buffer go
    assert eng.ring.pending() == 1
    _put(eng, e, Op.GETATTR, unique=0x32, commit_id=0x30, word=BUF, arg0=bytes(16))
    eng.on_cqe(ud(ENT, e.gid), 0, 0)
    assert counters.snapshot()["strict"]["kinds"] == {"commit_id": 1}


def test_the_registry_keeps_verdicts_not_engines() -> None:
    """A scenario makes many engines (parity: one per transport and seed): their memory goes
    when they do; what the strict_server case needs stays."""
    import gc
    import weakref

    at = strict.mark()
    t = _engine("bufring")
    _deliver(t, t.entries[0], Op.RELEASE, word=1)
    gone = weakref.ref(t)
    del t
    gc.collect()
    assert gone() is None
    (s,) = strict.since(at)
    assert s.violations == 1 and s.summary().startswith("bufring: 1 mismatch(es) in 1 ring requests")


def test_a_counters_write_from_a_signal_mid_check_does_not_deadlock() -> None:
    """serve's SIGUSR1 handler writes the counters from the serving thread, which may be inside
    delivered() at that moment."""
    t = _engine("bufpool")
    with t.strict.lock:
        assert t.counters.snapshot()["strict"]["checked"] == 0
