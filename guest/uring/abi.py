"""io_uring uapi layouts (include/uapi/linux/io_uring.h) and constants.

ctypes Structures for what the kernel reads or writes by pointer, struct
formats for the SQE and CQE slots, and `layouts()` for the ABI check.
"""

from __future__ import annotations

import ctypes
import struct
from enum import IntEnum, IntFlag

from guest.layout import StructLayout, ctypes_layout

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class Setup(IntFlag):
    """IORING_SETUP_*."""

    CQSIZE = 1 << 3
    SUBMIT_ALL = 1 << 7
    COOP_TASKRUN = 1 << 8
    SQE128 = 1 << 10
    CQE32 = 1 << 11
    SINGLE_ISSUER = 1 << 12
    DEFER_TASKRUN = 1 << 13


class Op(IntEnum):
    """IORING_OP_* used by the guest."""

    NOP = 0
    READ_FIXED = 4
    POLL_ADD = 6
    WRITE_FIXED = 5
    TIMEOUT = 11
    ASYNC_CANCEL = 14
    READ = 22
    WRITE = 23
    URING_CMD = 46


class Register(IntEnum):
    """io_uring_register opcodes."""

    BUFFERS = 0
    UNREGISTER_BUFFERS = 1
    FILES = 2
    BUFFERS2 = 15
    BUFFERS_UPDATE = 16
    # Generation D (posted kmbuf series v4, patch 03/25): 7.2/7.3 give 37 to BPF_FILTER.
    KMBUF_RING = 37
    UNREGISTER_KMBUF_RING = 38


ENTER_GETEVENTS = 1 << 0
FEAT_SINGLE_MMAP = 1 << 0
OFF_SQ_RING = 0
OFF_CQ_RING = 0x8000000
OFF_SQES = 0x10000000
OFF_KMBUF_RING = 0x88000000  # generation D: mmap offset of a kmbuf group's buffers
OFF_KMBUF_SHIFT = 16  # ... | (bgid << OFF_KMBUF_SHIFT)
CQE_F_BUFFER = 1 << 0  # cqe->flags: a buffer was selected, its id in flags >> 16
CQE_BUFFER_SHIFT = 16
POLLIN = 0x0001
IOSQE_ASYNC = 1 << 4
URING_CMD_FIXED = 1 << 0
RSRC_REGISTER_SPARSE = 1 << 0
SQE_SIZE = 128  # IORING_SETUP_SQE128 slots
SQE_CMD_OFFSET = 48  # sqe->cmd[] starts here (80 bytes with SQE128)


class SqringOffsets(ctypes.Structure):
    """struct io_sqring_offsets."""

    _fields_ = [("head", u32), ("tail", u32), ("ring_mask", u32), ("ring_entries", u32),
                ("flags", u32), ("dropped", u32), ("array", u32), ("resv1", u32),
                ("user_addr", u64)]


class CqringOffsets(ctypes.Structure):
    """struct io_cqring_offsets."""

    _fields_ = [("head", u32), ("tail", u32), ("ring_mask", u32), ("ring_entries", u32),
                ("overflow", u32), ("cqes", u32), ("flags", u32), ("resv1", u32),
                ("user_addr", u64)]


class Params(ctypes.Structure):
    """struct io_uring_params."""

    _fields_ = [("sq_entries", u32), ("cq_entries", u32), ("flags", u32),
                ("sq_thread_cpu", u32), ("sq_thread_idle", u32), ("features", u32),
                ("wq_fd", u32), ("resv", u32 * 3), ("sq_off", SqringOffsets),
                ("cq_off", CqringOffsets)]


class Iovec(ctypes.Structure):
    """struct iovec."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class RsrcRegister(ctypes.Structure):
    """struct io_uring_rsrc_register (IORING_REGISTER_BUFFERS2)."""

    _fields_ = [("nr", u32), ("flags", u32), ("resv2", u64), ("data", u64), ("tags", u64)]


class RsrcUpdate2(ctypes.Structure):
    """struct io_uring_rsrc_update2 (IORING_REGISTER_BUFFERS_UPDATE)."""

    _fields_ = [("offset", u32), ("resv", u32), ("data", u64), ("tags", u64),
                ("nr", u32), ("resv2", u32)]


class BufReg(ctypes.Structure):
    """struct io_uring_buf_reg (40 bytes). Generation D makes its first field a union
    {u64 ring_addr (pbuf rings); u32 buf_size (kmbuf rings)}; here `ring_addr` carries
    buf_size in its low 32 bits (little-endian). 7.2 split the tail into min_left + resv[5]."""

    _fields_ = [("ring_addr", u64), ("ring_entries", u32), ("bgid", u16), ("flags", u16),
                ("min_left", u32), ("resv", u32 * 5)]


class KernelTimespec(ctypes.Structure):
    """struct __kernel_timespec (IORING_OP_TIMEOUT)."""

    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_longlong)]


class Sqe(ctypes.Structure):
    """The first 64 bytes of struct io_uring_sqe (unions flattened)."""

    _fields_ = [("opcode", u8), ("flags", u8), ("ioprio", u16), ("fd", ctypes.c_int32),
                ("off", u64), ("addr", u64), ("len", u32), ("rw_flags", u32),
                ("user_data", u64), ("buf_index", u16), ("personality", u16),
                ("file_index", u32), ("addr3", u64), ("__pad2", u64)]


# Packing of the leading SQE fields into a zeroed 128-byte slot:
# opcode flags ioprio fd | off(or cmd_op,__pad1) | addr | len | op_flags | user_data
# | buf_index personality file_index
SQE_HEAD = struct.Struct("<BBHiQQIIQHHI")
SQE_CMD_HEAD = struct.Struct("<BBHiIIQIIQHHI")  # same, with cmd_op/__pad1 split
# The same heads written over a whole 128-byte slot in one pack_into: pad bytes ("x") and the
# unused tail of "80s" (sqe->cmd) are written as zeros, so the slot needs no zeroing first.
SQE_FULL = struct.Struct("<BBHiQQIIQHHI80x")
SQE_CMD_FULL = struct.Struct("<BBHiIIQIIQHHI80s")
CQE = struct.Struct("<QiI")


def layouts(generation: str = "C") -> dict[str, StructLayout]:
    """Layouts of the io_uring structs: identical in generations A and C (io_uring.h is
    byte-identical between 7.2 and 7.3); D adds struct io_uring_buf_reg with its union."""
    sqe_extra = {"cmd_op": (8, 4), "__pad1": (12, 4), "uring_cmd_flags": (28, 4),
                 "cmd": (48, 0)}
    sqe = ctypes_layout("io_uring_sqe", Sqe, sqe_extra)
    sqe.fields.pop("file_index")
    sqe.fields["file_index"] = (44, 4)
    cqe = StructLayout("io_uring_cqe", CQE.size,
                       {"user_data": (0, 8), "res": (8, 4), "flags": (12, 4)})
    extra = {}
    if generation == "D":
        reg = ctypes_layout("io_uring_buf_reg", BufReg)
        for gone in ("min_left", "resv"):  # 7.2 base only; v4's own base has resv[3]
            reg.fields.pop(gone)
        reg.fields["buf_size"] = (0, 4)
        extra["io_uring_buf_reg"] = reg
    return {
        **extra,
        "io_uring_params": ctypes_layout("io_uring_params", Params),
        "io_sqring_offsets": ctypes_layout("io_sqring_offsets", SqringOffsets),
        "io_cqring_offsets": ctypes_layout("io_cqring_offsets", CqringOffsets),
        "io_uring_sqe": sqe,
        "io_uring_cqe": cqe,
        "io_uring_rsrc_register": ctypes_layout("io_uring_rsrc_register", RsrcRegister),
        "io_uring_rsrc_update2": ctypes_layout("io_uring_rsrc_update2", RsrcUpdate2),
        "__kernel_timespec": ctypes_layout("__kernel_timespec", KernelTimespec),
        "iovec": ctypes_layout("iovec", Iovec),
    }


def constants(generation: str = "C") -> dict[str, int]:
    """uapi constants the guest hard-codes, by C name, for the compiled check."""
    out = {"IORING_SETUP_SQE128": int(Setup.SQE128), "IORING_SETUP_SINGLE_ISSUER": int(Setup.SINGLE_ISSUER),
           "IORING_SETUP_DEFER_TASKRUN": int(Setup.DEFER_TASKRUN), "IORING_OP_URING_CMD": int(Op.URING_CMD),
           "IORING_OP_READ_FIXED": int(Op.READ_FIXED), "IORING_OP_WRITE_FIXED": int(Op.WRITE_FIXED),
           "IORING_REGISTER_BUFFERS2": int(Register.BUFFERS2),
           "IORING_REGISTER_BUFFERS_UPDATE": int(Register.BUFFERS_UPDATE),
           "IORING_CQE_F_BUFFER": CQE_F_BUFFER, "IORING_CQE_BUFFER_SHIFT": CQE_BUFFER_SHIFT}
    if generation == "D":
        out.update(IORING_REGISTER_KMBUF_RING=int(Register.KMBUF_RING),
                   IORING_UNREGISTER_KMBUF_RING=int(Register.UNREGISTER_KMBUF_RING),
                   IORING_OFF_KMBUF_RING=OFF_KMBUF_RING, IORING_OFF_KMBUF_SHIFT=OFF_KMBUF_SHIFT)
    return out
