"""guest.uring.abi / ring helpers: layouts match io_uring.h (checked on the host)."""

from __future__ import annotations

import ctypes

import pytest

from guest.transports.base import nr_possible_cpus
from guest.transports.engine import CMD_REQ, pow2, ud
from guest.uring import abi


def test_sizes_match_uapi() -> None:
    assert ctypes.sizeof(abi.Params) == 120
    assert ctypes.sizeof(abi.SqringOffsets) == 40 == ctypes.sizeof(abi.CqringOffsets)
    assert ctypes.sizeof(abi.Sqe) == 64
    assert abi.CQE.size == 16
    assert ctypes.sizeof(abi.RsrcRegister) == 32 == ctypes.sizeof(abi.RsrcUpdate2)
    assert ctypes.sizeof(abi.Iovec) == 16


def test_params_offsets() -> None:
    assert abi.Params.sq_off.offset == 40 and abi.Params.cq_off.offset == 80
    assert abi.Params.features.offset == 20 and abi.Params.resv.offset == 28
    assert abi.CqringOffsets.cqes.offset == 20 and abi.SqringOffsets.array.offset == 24


def test_sqe_layout_table() -> None:
    f = abi.layouts()["io_uring_sqe"].fields
    assert f["opcode"] == (0, 1) and f["fd"] == (4, 4)
    assert f["cmd_op"] == (8, 4) and f["__pad1"] == (12, 4)
    assert f["addr"] == (16, 8) and f["len"] == (24, 4)
    assert f["uring_cmd_flags"] == (28, 4) and f["user_data"] == (32, 8)
    assert f["buf_index"] == (40, 2) and f["personality"] == (42, 2)
    assert f["file_index"] == (44, 4) and f["cmd"][0] == abi.SQE_CMD_OFFSET == 48


def test_uring_cmd_sqe_packing() -> None:
    buf = bytearray(128)
    abi.SQE_CMD_HEAD.pack_into(buf, 0, abi.Op.URING_CMD, 0, 0, 7, 2, 0, 0x1000, 2, 1,
                               0xABCD, 3, 0, 0)
    assert buf[0] == 46 and int.from_bytes(buf[4:8], "little") == 7
    assert int.from_bytes(buf[8:12], "little") == 2 and buf[12:16] == bytes(4)
    assert int.from_bytes(buf[16:24], "little") == 0x1000
    assert int.from_bytes(buf[24:28], "little") == 2
    assert int.from_bytes(buf[28:32], "little") == 1
    assert int.from_bytes(buf[32:40], "little") == 0xABCD
    assert int.from_bytes(buf[40:42], "little") == 3
    assert abi.SQE_CMD_HEAD.size == abi.SQE_HEAD.size == 48


def test_cmd_req_register_keeps_zero_copy_index_zero_unless_asked() -> None:
    cmd = CMD_REQ.pack(0, 0, 1, b"", 0, 0, 0)
    assert len(cmd) == 40 and cmd[16:18] == b"\x01\x00" and cmd[24:26] == b"\0\0"
    zc = CMD_REQ.pack(0, 0, 1, b"", 9, 0, 0)  # union: ent_zero_copy_buf_index = 9
    assert zc[24:26] == b"\x09\x00" and zc[26:] == bytes(14)


def test_user_data_and_pow2() -> None:
    assert ud(1, 5) >> 48 == 1 and ud(1, 5) & 0xFFFF == 5
    assert [pow2(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]


@pytest.mark.parametrize("text,count", [("0", 1), ("0-1", 2), ("0-3,8-9", 6), ("0,2", 2)])
def test_nr_possible_cpus(tmp_path, text: str, count: int) -> None:  # noqa: ANN001
    p = tmp_path / "possible"
    p.write_text(text + "\n")
    assert nr_possible_cpus(str(p)) == count
