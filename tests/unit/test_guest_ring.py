"""guest.uring.ring against the host kernel's io_uring (skipped where unavailable)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

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
