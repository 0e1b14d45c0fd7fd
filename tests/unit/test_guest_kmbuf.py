"""Generation D (posted kmbuf series v4) in the guest: encoders, the compiled layout and
constant check against a synthetic v4 header, buffer-id tracking, and the multi-ring wake."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from guest.counters import Counters
from guest.fuse import proto as P
from guest.transports.base import Options, SetupError
from guest.transports.engine import Entry
from guest.transports.kmbuf import D_CMD, KmbufTransport, KmbufZeroCopyTransport, round_up
from guest.uring import abi
from guest.uring.ring import Ring, addr_of
from harness.abi_check import CONST, Mismatch, check_abi, guest_constants

DATA = Path(__file__).parent.parent / "data" / "uapi"


def test_d_register_cmd_places_init_flags_and_depth() -> None:
    cmd = D_CMD.pack(0, 0, 1, P.URING_BUF_RING | P.URING_INIT_ZERO_COPY, 8, b"")
    assert len(cmd) == 24
    assert cmd[16:18] == b"\x01\x00"  # qid
    assert cmd[18:20] == b"\x03\x00" and cmd[20:22] == b"\x08\x00"  # init.flags, init.queue_depth
    assert cmd[22:] == b"\0\0"


def test_buf_reg_carries_buf_size_in_the_union() -> None:
    reg = abi.BufReg(ring_addr=65536, ring_entries=8, bgid=3)
    raw = bytes(reg)
    assert len(raw) == 40
    assert int.from_bytes(raw[0:4], "little") == 65536 and raw[4:8] == bytes(4)
    assert int.from_bytes(raw[8:12], "little") == 8 and int.from_bytes(raw[12:14], "little") == 3


def _include(tmp_path: Path) -> Path:
    inc = tmp_path / "include" / "linux"
    inc.mkdir(parents=True)
    (inc / "fuse.h").write_text("#include <stdint.h>\n" + (DATA / "gen-d.h").read_text())
    (inc / "io_uring.h").write_text((DATA / "gen-d-io_uring.h").read_text())
    return inc.parent


def test_d_layouts_and_constants_match_a_v4_shaped_header(tmp_path: Path) -> None:
    layouts = {k: v for k, v in {**P.layouts("D"), **abi.layouts("D")}.items()
               if k in ("fuse_uring_cmd_req", "fuse_uring_ent_in_out", "io_uring_buf_reg")}
    assert check_abi(_include(tmp_path), "D", layouts, consts=guest_constants("D")) == []


def test_a_wrong_constant_and_a_missing_one_are_reported(tmp_path: Path) -> None:
    consts = {"IORING_REGISTER_KMBUF_RING": 38, "IORING_NO_SUCH_THING": 1}
    got = check_abi(_include(tmp_path), "D", {}, consts=consts)
    assert Mismatch(CONST, "IORING_REGISTER_KMBUF_RING", "value", 38, 37) in got
    assert Mismatch(CONST, "IORING_NO_SUCH_THING", "absent", 1, None) in got
    assert "constant IORING_NO_SUCH_THING: absent" in str(got[0]) + str(got[1])


def _transport(cls: type = KmbufTransport, nbufs: int = 4, buf_size: int = 8192) -> KmbufTransport:
    """A transport with its buffer bookkeeping only (no kernel): for payload_loc."""
    t = cls.__new__(cls)
    t.counters, t.opts = Counters(cls.name), Options(pool_bufs=nbufs)
    t.nbufs, t.buf_size, t.depth = nbufs, buf_size, 4
    t.bufs = [mmap.mmap(-1, nbufs * buf_size), mmap.mmap(-1, nbufs * buf_size)]
    t.nobuf = mmap.mmap(-1, mmap.PAGESIZE)
    return t


def _deliver(t: KmbufTransport, e: Entry, op: int, cflags: int = 0) -> tuple[mmap.mmap, int]:
    e.op, e.cflags = op, cflags
    return t.payload_loc(e, 0)


def test_buffer_id_from_cqe_flags_is_kept_until_a_request_without_payload() -> None:
    t, e = _transport(), Entry(5, 1, 1)
    mm, off = _deliver(t, e, P.Op.LOOKUP, abi.CQE_F_BUFFER | (2 << abi.CQE_BUFFER_SHIFT))
    assert mm is t.bufs[1] and off == 2 * 8192 and t.held_key(e, 0, False) == 2
    assert _deliver(t, e, P.Op.GETATTR) == (t.bufs[1], 2 * 8192)  # kept: no flag this time
    mm, off = _deliver(t, e, P.Op.FLUSH)  # no payload: the kernel recycled the buffer
    assert mm is t.nobuf and t.held_key(e, 0, False) is None
    with pytest.raises(SetupError, match="without a buffer id") as exc:
        _deliver(t, e, P.Op.GETATTR)
    assert exc.value.errno == errno.ENOBUFS
    doc = t.counters.snapshot()["kmbuf"]
    assert (doc["selected"], doc["kept"], doc["missing"], doc["ids"]) == (1, 1, 1, {"1": [2]})


def test_a_buffer_id_beyond_the_ring_is_refused() -> None:
    t, e = _transport(nbufs=2), Entry(0, 0, 0)
    with pytest.raises(SetupError, match="buffer id 2"):
        _deliver(t, e, P.Op.LOOKUP, abi.CQE_F_BUFFER | (2 << abi.CQE_BUFFER_SHIFT))


def test_zero_copy_reads_take_no_buffer_but_write_replies_do() -> None:
    t, e = _transport(KmbufZeroCopyTransport), Entry(0, 0, 0)
    e.op = P.Op.READ
    assert t.is_zero_copy(e, 0) and not t.has_buffer(e)
    e.op = P.Op.WRITE
    assert t.is_zero_copy(e, 0) and t.has_buffer(e)  # fuse_write_out goes to the ring buffer
    e.op = P.Op.GETATTR
    assert not t.is_zero_copy(e, 0) and t.has_buffer(e)
    e.op = P.Op.READDIR
    assert t.is_zero_copy(e, 0) and not t.has_buffer(e)
    assert round_up(131072 + 1, 4096) == 135168


def test_a_poll_on_another_rings_fd_wakes_the_main_ring() -> None:
    """What the kmbuf transports' loop relies on: one thread, one io_uring per queue."""
    try:
        main, other = Ring(8), Ring(8)
    except OSError as exc:
        pytest.skip(f"io_uring unavailable on this host: {exc}")
    try:
        main.prep_poll(other.fd, abi.POLLIN, user_data=1)
        main.submit()
        assert main.reap() == []
        other.prep_rw(abi.Op.NOP, 0, 0, 0, 0, user_data=2)
        other.submit()
        main.prep_timeout(5.0, user_data=9)  # a poll that never fires ends the wait, not the test run
        main.submit(wait_nr=1)
        (ud, res, _), *_ = main.reap()
        assert ud == 1 and res & abi.POLLIN
        assert [c[0] for c in other.reap()] == [2]
    finally:
        main.close()
        other.close()


def _fixed_read(ring: Ring, fd: int, addr: int, length: int) -> int:
    """READ_FIXED of `length` bytes of fd into addr through fixed buffer 0: the CQE res."""
    ring.prep_rw(abi.Op.READ_FIXED, fd, addr, length, 0, user_data=7, buf_index=0)
    ring.submit(wait_nr=1)
    return next(res for ud, res, _ in ring.reap() if ud == 7)


def test_replace_headers_moves_the_queue_and_the_kernel_table_follows() -> None:
    """issue 28: after BUFFERS_UPDATE a server reads its headers where its table points. The
    queue's headers are copied into the new buffer, its entries read and write there (the other
    queue's stay put), and the kernel's slot 0 now reaches the new buffer, not the old area."""
    try:
        rings = [Ring(8), Ring(8)]
    except OSError as exc:
        pytest.skip(f"io_uring unavailable on this host: {exc}")
    t = KmbufTransport.__new__(KmbufTransport)
    t.depth, t.qrings = 2, rings
    t.entries = [Entry(i, i // 2, i % 2) for i in range(4)]
    stride, size = mmap.PAGESIZE, 2 * P.URING_HDR_SIZE
    t.hdr = mmap.mmap(-1, 2 * stride)
    for e in t.entries:
        e.hdr_off = e.qid * stride + e.idx * P.URING_HDR_SIZE
        t.hdr[e.hdr_off:e.hdr_off + P.URING_HDR_SIZE] = bytes([0x10 + e.gid]) * P.URING_HDR_SIZE
    new, fd = mmap.mmap(-1, size), os.memfd_create("fh-test")
    try:
        for q, ring in enumerate(rings):
            ring.register_buffers([(addr_of(t.hdr) + q * stride, size)])
        assert t.replace_headers(1, new) == 0 == t.headers_slot()
        assert new[:size] == bytes([0x12]) * P.URING_HDR_SIZE + bytes([0x13]) * P.URING_HDR_SIZE
        assert [(t.hdr_of(e) is new, e.hdr_off) for e in t.entries] == [
            (False, 0), (False, P.URING_HDR_SIZE), (True, 0), (True, P.URING_HDR_SIZE)]
        os.write(fd, b"K" * 64)
        assert _fixed_read(rings[1], fd, addr_of(new) + P.URING_HDR_SIZE, 64) == 64
        assert new[P.URING_HDR_SIZE:P.URING_HDR_SIZE + 64] == b"K" * 64
        assert _fixed_read(rings[1], fd, addr_of(t.hdr) + stride, 64) == -errno.EFAULT  # old area: gone
        assert t.hdr[stride:stride + 64] == bytes([0x12]) * 64
        assert _fixed_read(rings[0], fd, addr_of(t.hdr), 64) == 64  # queue 0 kept its buffer
        t.counters, t.devfd, t.payload_size = Counters("kmbuf"), fd, 4096
        e = t.entries[3]
        e.commit_id, e.loc = 0x1234, None
        t.commit(e, -errno.ENOENT, b"")  # the reply's header goes where the kernel reads it now
        assert P.OUT_HEADER.unpack(new, P.URING_HDR_SIZE) == (P.OUT_HEADER.size, -errno.ENOENT, 0x1234)
        assert t.hdr[stride + P.URING_HDR_SIZE:stride + 2 * P.URING_HDR_SIZE] == bytes([0x13]) * P.URING_HDR_SIZE
    finally:
        os.close(fd)
        for r in rings:
            r.close()
