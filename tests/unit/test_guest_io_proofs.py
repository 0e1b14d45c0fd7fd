"""Path proofs of io_direct and io_mmap (the server's rw counters: O_DIRECT requests of
fuse_direct_io, page-cache READs, write-back WRITEs) and of notify-retrieve's W2 (which path
notify_unique 0 took). The counters are fed the fuse_read_in / fuse_write_in the kernel sends;
the cases run on a local folder with a scripted snapshot in place of the server."""

from __future__ import annotations

import os
import struct

import pytest

from guest.checks import io_cases
from guest.checks.context import Ctx, Skip
from guest.counters import FUSE_WRITE_CACHE, LOCKOWNER, Counters
from guest.devfuse import DevFuseReader
from guest.edge import notify
from guest.fuse import proto as P
from guest.fuse.fs import MemoryFs
from guest.negotiate import Init
from guest.server import Server
from guest.transports import base
from guest.transports.engine import ENT as ENT_UD
from guest.transports.engine import ud

Op = P.Op
ENT = struct.Struct("<QQIIQ")  # fuse_uring_ent_in_out: flags, commit_id, payload_sz, offset/word, reserved


def _rw_in(op: int, size: int, rw_flags: int = 0, flags: int = 0) -> bytes:
    """fuse_read_in / fuse_write_in as fs/fuse/file.c fills it."""
    wire = P.READ_IN if op == Op.READ else P.WRITE_IN
    return wire.pack(7, 0, size, rw_flags, 0x1234 if rw_flags & LOCKOWNER else 0, flags, 0)


def test_rw_counts_direct_io_o_direct_and_write_back() -> None:
    c = Counters("legacy")
    c.request("devfuse", Op.READ, None, _rw_in(Op.READ, 4096))  # readahead: page cache
    c.request("devfuse", Op.READ, None, _rw_in(Op.READ, 8192, LOCKOWNER, os.O_DIRECT | os.O_RDWR))
    c.request("io_uring", Op.READ, 0, _rw_in(Op.READ, 100, LOCKOWNER, os.O_RDONLY))  # FOPEN_DIRECT_IO
    c.request("io_uring", Op.WRITE, 1, _rw_in(Op.WRITE, 300, FUSE_WRITE_CACHE))
    c.request("devfuse", Op.WRITE, None, _rw_in(Op.WRITE, 50, 0, os.O_DIRECT))  # a buffered fallback
    c.request("devfuse", Op.WRITE, None, _rw_in(Op.WRITE, 50)[:39])  # short: not parsed
    c.request("devfuse", "INIT")
    c.request("devfuse", Op.GETATTR, None, bytes(40))
    rw = c.snapshot()["rw"]
    assert rw["READ"] == {"bytes": 12388, "direct_io": 2, "direct_io_bytes": 8292, "o_direct": 1,
                          "o_direct_bytes": 8192}
    assert rw["WRITE"] == {"bytes": 350, "direct_io": 0, "direct_io_bytes": 0, "o_direct": 0,
                           "o_direct_bytes": 0, "write_cache": 1, "write_cache_bytes": 300}
    assert c.snapshot()["per_opcode"]["WRITE"] == 3


def test_devfuse_counts_the_first_arg_it_parsed() -> None:
    counters = Counters("legacy")
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        reader = DevFuseReader(out, Server(MemoryFs(), counters), counters, 1 << 16)
        arg0 = _rw_in(Op.READ, 4096, LOCKOWNER, os.O_DIRECT)
        reader.handle(P.IN_HEADER.pack(40 + len(arg0), Op.READ, 2, 1, 0, 0, 1, 0, 0) + arg0)
    finally:
        os.close(out)
    assert counters.snapshot()["rw"]["READ"]["o_direct_bytes"] == 4096


def test_the_ring_engine_counts_the_first_arg_it_read() -> None:
    """RingEngine.serve hands the fuse_read_in at header offset 128 to the counters (a real
    bufpool engine and io_uring; the COMMIT SQE is queued, never submitted)."""
    counters = Counters("bufpool")
    init = Init(7, 46, 0, 0, 46, 0, 0, 131072, 32, 8192, True)
    try:
        eng = base.get("bufpool")(-1, Server(MemoryFs(), counters), counters, init, base.Options(queue_depth=2))
    except OSError as exc:
        pytest.skip(f"io_uring unavailable on this host: {exc}")
    eng.alloc()
    e = eng.entries[0]
    arg0 = _rw_in(Op.READ, 4096, LOCKOWNER, os.O_DIRECT)
    P.IN_HEADER.pack_into(eng.hdr, e.hdr_off, 40 + len(arg0), Op.READ, 0x30, 1, 0, 0, 1, 0, 0)
    eng.hdr[e.hdr_off + 128:e.hdr_off + 128 + len(arg0)] = arg0
    ENT.pack_into(eng.hdr, e.hdr_off + 256, 0, 0x30, 0, 0, 0)
    eng.on_cqe(ud(ENT_UD, e.gid), 0, 0)
    assert counters.snapshot()["rw"]["READ"]["o_direct_bytes"] == 4096


def _doc(**rw: int) -> dict:
    """A counters document with rw keys given as READ_bytes=..., WRITE_write_cache=..."""
    doc = {"per_opcode": {"READ": rw.pop("READ", 0), "WRITE": rw.pop("WRITE", 0)},
           "rw": {"READ": {"bytes": 0, "direct_io_bytes": 0, "o_direct": 0, "o_direct_bytes": 0},
                  "WRITE": {"bytes": 0, "o_direct": 0, "o_direct_bytes": 0, "write_cache": 0,
                            "write_cache_bytes": 0}}}
    for key, v in rw.items():
        op, k = key.split("_", 1)
        doc["rw"][op][k] = v
    return doc


def _ctx(tmp_path, docs: list[dict]) -> Ctx:  # noqa: ANN001
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    it = iter(docs)
    return Ctx(str(mnt), str(tmp_path), "legacy", "memory", 3, 10, lambda _: None, snapshot=lambda: next(it))


ZERO = _doc()
MMAP_WANT = sum(min(4096, io_cases.MMAP_SIZE - p * 4096) for p in io_cases.MMAP_DIRTY)


def _mmap_docs(faults: int, cached: int, write_back: int) -> list[dict]:
    """io_mmap's six snapshots: around the faults, the msync and the re-read."""
    return [ZERO, _doc(READ=9, READ_bytes=faults), ZERO, _doc(WRITE=3, WRITE_write_cache=3,
            WRITE_write_cache_bytes=write_back), ZERO, _doc(READ=9, READ_bytes=cached)]


def test_io_mmap_passes_with_reads_write_back_and_a_re_read(tmp_path) -> None:  # noqa: ANN001
    io_cases.io_mmap(_ctx(tmp_path, _mmap_docs(io_cases.MMAP_SIZE, io_cases.MMAP_SIZE, MMAP_WANT)))


@pytest.mark.parametrize(("docs", "why"), [
    (_mmap_docs(4096, io_cases.MMAP_SIZE, MMAP_WANT), "not exercised: reading 1049353 mapped bytes took 9 READs"),
    ([ZERO, _doc(READ=9, READ_bytes=io_cases.MMAP_SIZE, READ_direct_io_bytes=io_cases.MMAP_SIZE)],
     "not exercised: reading"),  # fuse_direct_io's READs are not page faults
    (_mmap_docs(io_cases.MMAP_SIZE, io_cases.MMAP_SIZE, MMAP_WANT - 1), "not exercised: msync of 3 dirtied"),
    (_mmap_docs(io_cases.MMAP_SIZE, 0, MMAP_WANT), "not exercised: the re-read took 0 bytes"),
])
def test_io_mmap_is_not_exercised_without_the_server_seeing_it(tmp_path, docs: list, why: str) -> None:  # noqa: ANN001
    with pytest.raises(AssertionError, match=why):
        io_cases.io_mmap(_ctx(tmp_path, docs))


def test_io_mmap_without_counters_is_not_exercised(tmp_path) -> None:  # noqa: ANN001
    ctx = Ctx(str(tmp_path), str(tmp_path), "legacy", "memory", 3, 10, lambda _: None)
    with pytest.raises(AssertionError, match="not exercised: no counters snapshot"):
        io_cases.io_mmap(ctx)


SIZE = 512 * 1024


def _direct(tmp_path, docs: list[dict]) -> None:  # noqa: ANN001
    try:
        io_cases.io_direct(_ctx(tmp_path, docs))
    except Skip as exc:
        pytest.skip(f"no O_DIRECT on the test folder: {exc}")


def test_io_direct_passes_when_every_byte_went_o_direct(tmp_path) -> None:  # noqa: ANN001
    w = _doc(WRITE=4, WRITE_bytes=SIZE, WRITE_o_direct=4, WRITE_o_direct_bytes=SIZE)
    r = _doc(WRITE=4, WRITE_bytes=SIZE, WRITE_o_direct=4, WRITE_o_direct_bytes=SIZE, READ=4, READ_bytes=SIZE,
             READ_o_direct=4, READ_o_direct_bytes=SIZE)
    _direct(tmp_path, [ZERO, w, r])


@pytest.mark.parametrize(("after_write", "after_read", "why"), [
    (_doc(WRITE=4, WRITE_bytes=SIZE), None, "not exercised: the O_DIRECT pwritev of 524288 bytes reached the "
     "server as 0 direct WRITEs with O_DIRECT of 0 bytes \\(4 WRITEs of 524288 bytes in all\\)"),
    (_doc(WRITE_o_direct_bytes=SIZE), _doc(WRITE_o_direct_bytes=SIZE), "not exercised: the O_DIRECT preadv"),
])
def test_io_direct_is_not_exercised_through_the_page_cache(tmp_path, after_write: dict, after_read: dict | None,
                                                          why: str) -> None:  # noqa: ANN001
    with pytest.raises(AssertionError, match=why):
        _direct(tmp_path, [ZERO, after_write, after_read or after_write])


# -- notify-retrieve W2 ---------------------------------------------------------------------------
WARN = "WARNING: fs/fuse/dev_uring.c:936 at fuse_uring_prepare_send+0x1c/0x60"


def test_w2_a_refusal_at_write_passes_and_says_so() -> None:
    ok, why = notify.w2_verdict("EINVAL", True, [], 0, "")
    assert ok and why.startswith("path: refused at write() (EINVAL)") and "fixed behaviour" in why


@pytest.mark.parametrize(("args", "why"), [
    (("EINVAL", False, [], 0, ""), "not exercised: write() -> EINVAL, and W3's notification"),
    (("ENOENT", True, [], 0, ""), "not exercised: write() -> ENOENT"),
    (("EINVAL", True, [0x10], 0, ""), "refused at write() (EINVAL), yet its NOTIFY_REPLY reached the ring"),
    (("EINVAL", True, [], 0, WARN), "refused at write() (EINVAL), yet the kernel warned"),
])
def test_w2_a_refusal_that_proves_nothing_fails(args: tuple, why: str) -> None:
    ok, got = notify.w2_verdict(*args)
    assert not ok and got.startswith(why), got


def test_w2_accepted_and_warned_is_the_known_issue() -> None:
    ok, why = notify.w2_verdict(40, True, [], 0, WARN)
    assert not ok and why == (f"accepted (write() -> 40), no NOTIFY_REPLY reached the server, and the kernel "
                              f"warned: {WARN} (known issue fuse-uring-notify-retrieve-unique-zero-warn)")


@pytest.mark.parametrize(("ring", "devfuse", "why"), [
    ([0x4000], 0, "path: accepted (write() -> 40), its NOTIFY_REPLY reached the ring with unique 0x4000 "
     "(the kernel gave it one); no kernel warning"),
    ([0], 0, "path: accepted (write() -> 40), its NOTIFY_REPLY reached the ring with unique 0x0 (kept 0)"),
    ([], 1, "path: accepted (write() -> 40), its NOTIFY_REPLY came over /dev/fuse (1); no kernel warning"),
])
def test_w2_accepted_without_a_warning_passes_only_with_its_reply(ring: list, devfuse: int, why: str) -> None:
    ok, got = notify.w2_verdict(40, True, ring, devfuse, "")
    assert ok and got.startswith(why), got
    ok, got = notify.w2_verdict(40, True, [], 0, "")
    assert not ok and got.endswith("the notification was lost")
