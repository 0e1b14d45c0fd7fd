"""guest.uring.ring against the host kernel's io_uring (skipped where unavailable)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct

import pytest

from guest.uring import abi
from guest.uring.ring import Ring, addr_of


@pytest.fixture
def ring():  # noqa: ANN201
    try:
        r = Ring(8)
    except OSError as exc:
        pytest.skip(f"io_uring unavailable: {exc}")
    yield r
    r.close()


def _wait(r: Ring, n: int = 1) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        r.submit(wait_nr=1)
        out += r.reap()
    return out


def test_setup_uses_sqe128(ring: Ring) -> None:
    assert ring.params.flags & abi.Setup.SQE128
    assert len(ring.sqes) == ring.sq_entries * 128


def test_read_and_fixed_read(ring: Ring, tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "f"
    p.write_bytes(b"0123456789" * 500)
    fd = os.open(p, os.O_RDONLY)
    try:
        buf = ctypes.create_string_buffer(16)
        ring.prep_rw(abi.Op.READ, fd, ctypes.addressof(buf), 10, 5, user_data=7)
        assert _wait(ring) == [(7, 10, 0)] and buf.raw[:10] == b"5678901234"
        mm = mmap.mmap(-1, 8192)
        ring.register_buffers([(addr_of(mm), 8192), (0, 0)])  # slot 1 sparse
        ring.prep_rw(abi.Op.READ_FIXED, fd, addr_of(mm) + 100, 20, 0, user_data=8,
                     buf_index=0)
        assert _wait(ring) == [(8, 20, 0)] and mm[100:120] == b"01234567890123456789"
        ring.prep_rw(abi.Op.READ_FIXED, fd, 0, 20, 0, user_data=9, buf_index=1)
        assert _wait(ring)[0][1] == -errno.EFAULT  # empty slot
    finally:
        os.close(fd)


def test_sparse_table_and_update(ring: Ring, tmp_path) -> None:  # noqa: ANN001
    ring.register_buffers_sparse(4)
    mm = mmap.mmap(-1, 4096)
    ring.update_buffers(2, [(addr_of(mm), 4096)])
    p = tmp_path / "g"
    p.write_bytes(b"abc")
    fd = os.open(p, os.O_RDONLY)
    try:
        ring.prep_rw(abi.Op.READ_FIXED, fd, addr_of(mm), 3, 0, user_data=1, buf_index=2)
        assert _wait(ring) == [(1, 3, 0)] and mm[:3] == b"abc"
    finally:
        os.close(fd)


def test_timeout_and_pending(ring: Ring) -> None:
    ring.prep_timeout(0.01, user_data=3)
    assert ring.pending() == 1
    (ud, res, _), = _wait(ring)
    assert (ud, res) == (3, -errno.ETIME) and ring.pending() == 0


def test_uring_cmd_on_a_non_fuse_fd_fails_cleanly(ring: Ring, tmp_path) -> None:  # noqa: ANN001
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        ring.prep_uring_cmd(fd, 3, 11, b"\0" * 40)
        (ud, res, _), = _wait(ring)
        assert ud == 11 and res < 0
    finally:
        os.close(fd)


def _reference_cmd_slot(fd: int, cmd_op: int, user_data: int, cmd: bytes, addr: int, length: int,
                        cmd_flags: int, buf_index: int, sqe_flags: int) -> bytes:
    """A URING_CMD slot written the long way: zeroed, the 48-byte head, then sqe->cmd."""
    slot = bytearray(abi.SQE_SIZE)
    abi.SQE_CMD_HEAD.pack_into(slot, 0, abi.Op.URING_CMD, sqe_flags, 0, fd, cmd_op, 0, addr, length,
                               cmd_flags, user_data, buf_index, 0, 0)
    slot[abi.SQE_CMD_OFFSET:abi.SQE_CMD_OFFSET + len(cmd)] = cmd
    return bytes(slot)


def test_one_shot_sqes_write_the_whole_slot(ring: Ring) -> None:
    """prep_uring_cmd and prep_rw write all 128 bytes in one pack_into: a slot that held other
    bytes before ends up as the zeroed, field-by-field slot would (no stale byte survives)."""
    ring.sqes[:] = b"\xa5" * len(ring.sqes)
    cases = [(5, 2, 0x1_0000_0000_0003, bytes(range(1, 41)), 0, 0, 0, 0, 0),
             (6, 1, 7, b"\x01" * 80, 0x7F00_0000_1000, 2, abi.URING_CMD_FIXED, 3, abi.IOSQE_ASYNC)]
    for args in cases:
        off = ring._local_tail & ring.sq_mask
        ring.prep_uring_cmd(args[0], args[1], args[2], args[3], addr=args[4], length=args[5],
                            cmd_flags=args[6], buf_index=args[7], sqe_flags=args[8])
        assert ring.sqes[off * 128:off * 128 + 128] == _reference_cmd_slot(*args)
    off = ring._local_tail & ring.sq_mask
    ring.prep_rw(abi.Op.READ_FIXED, 9, 0x1000, 4096, 1 << 33, 0xBEEF, buf_index=4)
    want = bytearray(128)
    abi.SQE_HEAD.pack_into(want, 0, abi.Op.READ_FIXED, 0, 0, 9, 1 << 33, 0x1000, 4096, 0, 0xBEEF, 4, 0, 0)
    assert ring.sqes[off * 128:off * 128 + 128] == bytes(want)
    off = ring._local_tail & ring.sq_mask
    with pytest.raises(struct.error):  # fd out of range
        ring.prep_rw(abi.Op.READ, 1 << 40, 0, 0, 0, 1)
    assert ring.sqes[off * 128:off * 128 + 128] == bytes(128)  # reserved, so a NOP as get_sqe's


def test_uring_req_reads_in_header_and_ent_in_out_at_their_offsets() -> None:
    """P.URING_REQ (one read per request) gives the fields fuse_in_header and
    fuse_uring_ent_in_out give at 0 and URING_ENT_OFFSET of a struct fuse_uring_req_header."""
    from guest.fuse import proto as P

    hdr = bytearray(P.URING_HDR_SIZE)
    P.IN_HEADER.pack_into(hdr, 0, 123, 16, 0x10, 7, 1000, 1001, 42, 3, 9)
    hdr[128:168] = b"\xff" * 40  # op_in: not part of it
    P.URING_ENT_IN_OUT["C"].pack_into(hdr, P.URING_ENT_OFFSET, 1, 0x10, 83, 8192, 5)
    assert P.URING_REQ.size == P.URING_HDR_SIZE
    assert P.URING_REQ.unpack_from(hdr) == (P.IN_HEADER.unpack(hdr)
                                            + P.URING_ENT_IN_OUT["C"].unpack(hdr, P.URING_ENT_OFFSET))
