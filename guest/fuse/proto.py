"""fuse.h layouts (protocol 7.45/7.46) and pure pack/parse helpers.

No I/O. Malformed input raises ValueError. Generation "A" is Linux 7.2
(7.45, per-entry iovec ring ABI), "C" is Linux 7.3 (7.46, bufpool + zero-copy), "B" the
posted bufring series v2 (10/14: REGISTER flag FUSE_URING_BUFRING, minor still 45), "D" the
posted kmbuf series v4.
"""

from __future__ import annotations

import functools
import struct
from enum import IntEnum
from typing import NamedTuple

from guest.layout import StructLayout, Wire


class Op(IntEnum):
    """enum fuse_opcode (the subset the server knows by name)."""

    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52


_OP_NAMES = {int(o): o.name for o in Op}


def op_name(opcode: int) -> str:
    """Name of an opcode, or OP_<n> for unknown ones."""
    name = _OP_NAMES.get(opcode)
    return name if name is not None else f"OP_{opcode}"


ROOT_ID = 1
KERNEL_MAJOR = 7
# INIT flags (fuse_init_in/out.flags, and flags2 = bits 32..63)
ASYNC_READ = 1 << 0
BIG_WRITES = 1 << 5
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
ASYNC_DIO = 1 << 15
PARALLEL_DIROPS = 1 << 18
ABORT_ERROR = 1 << 21
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
DIRECT_IO_ALLOW_MMAP = 1 << 36
OVER_IO_URING = 1 << 41
REQUEST_TIMEOUT = 1 << 42
HAS_IO_URING_BUFPOOL = 1 << 43
# open_flags in fuse_open_out
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_IO_URING_ZERO_COPY = 1 << 8
# fuse_setattr_in.valid
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FATTR_ATIME, FATTR_MTIME, FATTR_FH = 1 << 4, 1 << 5, 1 << 6
FATTR_ATIME_NOW, FATTR_MTIME_NOW, FATTR_CTIME = 1 << 7, 1 << 8, 1 << 10
# io_uring ring ABI
URING_CMD_REGISTER = 1
URING_CMD_COMMIT_AND_FETCH = 2
URING_CMD_ADD_QUEUE = 3
URING_CMD_ADD_BUFPOOL = 4
URING_ZERO_COPY = 1 << 0  # ADD_QUEUE flag (C)
URING_BUF_RING = 1 << 0  # D: fuse_uring_cmd_req.init.flags (kmbuf v4 19/25)
URING_BUFRING = 1 << 0  # B: fuse_uring_cmd_req.flags, the only valid bit (bufring v2 10/14)
URING_INIT_ZERO_COPY = 1 << 1  # D: init.flags, with init.queue_depth (kmbuf v4 24/25)
URING_ENT_ZERO_COPY = 1 << 0  # ent_in_out.flags
URING_IN_OUT_HEADER_SZ = 128
URING_OP_IN_OUT_SZ = 128
URING_HDR_SIZE = 288  # sizeof(struct fuse_uring_req_header)
URING_ENT_OFFSET = 256  # offsetof(fuse_uring_req_header, ring_ent_in_out)

IN_HEADER = Wire("fuse_in_header", [("len", "I"), ("opcode", "I"), ("unique", "Q"),
                                    ("nodeid", "Q"), ("uid", "I"), ("gid", "I"),
                                    ("pid", "I"), ("total_extlen", "H"),
                                    ("padding", "H")])
OUT_HEADER = Wire("fuse_out_header", [("len", "I"), ("error", "i"), ("unique", "Q")])
INIT_IN = Wire("fuse_init_in", [("major", "I"), ("minor", "I"), ("max_readahead", "I"),
                                ("flags", "I"), ("flags2", "I"), ("unused", "44s")])
INIT_OUT = Wire("fuse_init_out", [
    ("major", "I"), ("minor", "I"), ("max_readahead", "I"), ("flags", "I"),
    ("max_background", "H"), ("congestion_threshold", "H"), ("max_write", "I"),
    ("time_gran", "I"), ("max_pages", "H"), ("map_alignment", "H"), ("flags2", "I"),
    ("max_stack_depth", "I"), ("request_timeout", "H"), ("unused", "22s")])
ATTR = Wire("fuse_attr", [
    ("ino", "Q"), ("size", "Q"), ("blocks", "Q"), ("atime", "Q"), ("mtime", "Q"),
    ("ctime", "Q"), ("atimensec", "I"), ("mtimensec", "I"), ("ctimensec", "I"),
    ("mode", "I"), ("nlink", "I"), ("uid", "I"), ("gid", "I"), ("rdev", "I"),
    ("blksize", "I"), ("flags", "I")])
ENTRY_OUT = Wire("fuse_entry_out", [
    ("nodeid", "Q"), ("generation", "Q"), ("entry_valid", "Q"), ("attr_valid", "Q"),
    ("entry_valid_nsec", "I"), ("attr_valid_nsec", "I"), ("attr", ATTR)])
ATTR_OUT = Wire("fuse_attr_out", [("attr_valid", "Q"), ("attr_valid_nsec", "I"),
                                  ("dummy", "I"), ("attr", ATTR)])
GETATTR_IN = Wire("fuse_getattr_in", [("getattr_flags", "I"), ("dummy", "I"), ("fh", "Q")])
SETATTR_IN = Wire("fuse_setattr_in", [
    ("valid", "I"), ("padding", "I"), ("fh", "Q"), ("size", "Q"), ("lock_owner", "Q"),
    ("atime", "Q"), ("mtime", "Q"), ("ctime", "Q"), ("atimensec", "I"),
    ("mtimensec", "I"), ("ctimensec", "I"), ("mode", "I"), ("unused4", "I"),
    ("uid", "I"), ("gid", "I"), ("unused5", "I")])
OPEN_IN = Wire("fuse_open_in", [("flags", "I"), ("open_flags", "I")])
OPEN_OUT = Wire("fuse_open_out", [("fh", "Q"), ("open_flags", "I"), ("backing_id", "i")])
CREATE_IN = Wire("fuse_create_in", [("flags", "I"), ("mode", "I"), ("umask", "I"),
                                    ("open_flags", "I")])
MKDIR_IN = Wire("fuse_mkdir_in", [("mode", "I"), ("umask", "I")])
MKNOD_IN = Wire("fuse_mknod_in", [("mode", "I"), ("rdev", "I"), ("umask", "I"),
                                  ("padding", "I")])
RENAME_IN = Wire("fuse_rename_in", [("newdir", "Q")])
RENAME2_IN = Wire("fuse_rename2_in", [("newdir", "Q"), ("flags", "I"), ("padding", "I")])
READ_IN = Wire("fuse_read_in", [("fh", "Q"), ("offset", "Q"), ("size", "I"),
                                ("read_flags", "I"), ("lock_owner", "Q"), ("flags", "I"),
                                ("padding", "I")])
WRITE_IN = Wire("fuse_write_in", [("fh", "Q"), ("offset", "Q"), ("size", "I"),
                                  ("write_flags", "I"), ("lock_owner", "Q"),
                                  ("flags", "I"), ("padding", "I")])
WRITE_OUT = Wire("fuse_write_out", [("size", "I"), ("padding", "I")])
RELEASE_IN = Wire("fuse_release_in", [("fh", "Q"), ("flags", "I"), ("release_flags", "I"),
                                      ("lock_owner", "Q")])
FLUSH_IN = Wire("fuse_flush_in", [("fh", "Q"), ("unused", "I"), ("padding", "I"),
                                  ("lock_owner", "Q")])
FSYNC_IN = Wire("fuse_fsync_in", [("fh", "Q"), ("fsync_flags", "I"), ("padding", "I")])
SETXATTR_IN_COMPAT = Wire("fuse_setxattr_in_compat", [("size", "I"), ("flags", "I")])
GETXATTR_IN = Wire("fuse_getxattr_in", [("size", "I"), ("padding", "I")])
GETXATTR_OUT = Wire("fuse_getxattr_out", [("size", "I"), ("padding", "I")])
ACCESS_IN = Wire("fuse_access_in", [("mask", "I"), ("padding", "I")])
FORGET_IN = Wire("fuse_forget_in", [("nlookup", "Q")])
FORGET_ONE = Wire("fuse_forget_one", [("nodeid", "Q"), ("nlookup", "Q")])
BATCH_FORGET_IN = Wire("fuse_batch_forget_in", [("count", "I"), ("dummy", "I")])
INTERRUPT_IN = Wire("fuse_interrupt_in", [("unique", "Q")])
STATX_IN = Wire("fuse_statx_in", [("getattr_flags", "I"), ("reserved", "I"), ("fh", "Q"),
                                  ("sx_flags", "I"), ("sx_mask", "I")])
KSTATFS = Wire("fuse_kstatfs", [("blocks", "Q"), ("bfree", "Q"), ("bavail", "Q"),
                                ("files", "Q"), ("ffree", "Q"), ("bsize", "I"),
                                ("namelen", "I"), ("frsize", "I"), ("padding", "I"),
                                ("spare", "24s")])
STATFS_OUT = Wire("fuse_statfs_out", [("st", KSTATFS)])
DIRENT = Wire("fuse_dirent", [("ino", "Q"), ("off", "Q"), ("namelen", "I"), ("type", "I")])
DIRENTPLUS = Wire("fuse_direntplus", [("entry_out", ENTRY_OUT), ("dirent", DIRENT)])
URING_ENT_IN_OUT = {
    "A": Wire("fuse_uring_ent_in_out", [("flags", "Q"), ("commit_id", "Q"),
                                        ("payload_sz", "I"), ("padding", "I"),
                                        ("reserved", "Q")]),
    "C": Wire("fuse_uring_ent_in_out", [("flags", "Q"), ("commit_id", "Q"),
                                        ("payload_sz", "I"), ("offset", "I"),
                                        ("reserved", "Q")]),
}
URING_ENT_IN_OUT["D"] = URING_ENT_IN_OUT["A"]
# bufring v2 10/14: the first half of the old u32 padding is the selected buffer's id
URING_ENT_IN_OUT["B"] = Wire("fuse_uring_ent_in_out", [("flags", "Q"), ("commit_id", "Q"),
                                                       ("payload_sz", "I"), ("buf_id", "H"),
                                                       ("padding", "H"), ("reserved", "Q")])
URING_REQ_HEADER = Wire("fuse_uring_req_header", [("in_out", "128s"), ("op_in", "128s"),
                                                   ("ring_ent_in_out", "32s")])
#: What a ring request's header tells the server, read in one go from a struct
#: fuse_uring_req_header: the fuse_in_header fields (len, opcode, unique, nodeid, uid, gid,
#: pid, total_extlen, padding) at 0, then fuse_uring_ent_in_out (flags, commit_id,
#: payload_sz, the u32 at 20: offset (C) / padding (A, D) / buf_id|padding<<16 (B), reserved)
#: at URING_ENT_OFFSET: 14 values. op_in (at 128) is not read.
URING_REQ = struct.Struct("<IIQQIIIHH216xQQIIQ")
URING_CMD_REQ = {
    "A": Wire("fuse_uring_cmd_req", [("flags", "Q"), ("commit_id", "Q"), ("qid", "H"),
                                     ("padding", "6s")]),
    "C": Wire("fuse_uring_cmd_req", [("flags", "Q"), ("commit_id", "Q"), ("qid", "H"),
                                     ("padding", "6s"), ("bufpool.uaddr", "Q"),
                                     ("bufpool.len", "I"), ("bufpool.reserved", "I")]),
    # kmbuf v4 19/25 + 24/25: union { struct { u16 flags; u16 queue_depth; } init; }
    "D": Wire("fuse_uring_cmd_req", [("flags", "Q"), ("commit_id", "Q"), ("qid", "H"),
                                     ("init.flags", "H"), ("init.queue_depth", "H"),
                                     ("padding", "2s")]),
    # bufring v2 10/14: padding[6] -> u16 padding + union { struct { u32 buf_size;
    # u16 queue_depth; u16 padding; } init; }: 28 bytes of fields, 32 with the u64 alignment
    # (x86-64; 28 on i386). "_align" is that tail, not a C field.
    "B": Wire("fuse_uring_cmd_req", [("flags", "Q"), ("commit_id", "Q"), ("qid", "H"),
                                     ("padding", "H"), ("init.buf_size", "I"),
                                     ("init.queue_depth", "H"), ("init.padding", "H"),
                                     ("_align", "4s")]),
}
# Size of the first in-arg per opcode as the kernel sends it (goes to op_in on
# the ring); 0 = zero-size arg0 or no args. Names and data follow it.
ARG0_SIZE = {
    Op.GETATTR: 16, Op.SETATTR: 88, Op.MKNOD: 16, Op.MKDIR: 8, Op.RENAME: 8, Op.LINK: 8,
    Op.OPEN: 8, Op.READ: 40, Op.WRITE: 40, Op.RELEASE: 24, Op.FSYNC: 16,
    Op.SETXATTR: 8, Op.GETXATTR: 8, Op.LISTXATTR: 8, Op.FLUSH: 24, Op.INIT: 64,
    Op.OPENDIR: 8, Op.READDIR: 40, Op.RELEASEDIR: 24, Op.FSYNCDIR: 16, Op.ACCESS: 8,
    Op.CREATE: 16, Op.INTERRUPT: 8, Op.FORGET: 8, Op.BATCH_FORGET: 8,
    Op.READDIRPLUS: 40, Op.RENAME2: 16, Op.STATX: 24, Op.LSEEK: 24, Op.FALLOCATE: 32,
    Op.GETLK: 48, Op.SETLK: 48, Op.SETLKW: 48, Op.BMAP: 16, Op.POLL: 24,
}


class InHeader(NamedTuple):
    """Parsed struct fuse_in_header."""

    len: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    total_extlen: int


#: fuse_in_header without its trailing padding: the InHeader fields, in order
_IN_HEADER_FIELDS = struct.Struct("<IIQQIIIH2x")
#: InHeader from its 8 values (InHeader._make without its Python-level length check)
new_in_header = functools.partial(tuple.__new__, InHeader)


def parse_in_header(buf: object, offset: int = 0) -> InHeader:
    """Parse a fuse_in_header (ValueError on a short buffer)."""
    try:
        return new_in_header(_IN_HEADER_FIELDS.unpack_from(buf, offset))
    except struct.error as exc:
        raise ValueError(f"{IN_HEADER.name}: short buffer ({exc})") from None


def split_devfuse(buf: bytes) -> tuple[InHeader, bytes, bytes]:
    """Split a /dev/fuse request into (header, arg0, rest), validating len."""
    try:  # parse_in_header's, written out (a call less per request)
        hdr = new_in_header(_IN_HEADER_FIELDS.unpack_from(buf))
    except struct.error as exc:
        raise ValueError(f"{IN_HEADER.name}: short buffer ({exc})") from None
    size = IN_HEADER.size
    if hdr.len != len(buf) or hdr.len < size:
        raise ValueError(f"in_header.len {hdr.len} != read size {len(buf)}")
    n = ARG0_SIZE.get(hdr.opcode, 0)
    if len(buf) - size < n:
        raise ValueError(f"{op_name(hdr.opcode)}: body {len(buf) - size} < arg0 {n}")
    return hdr, buf[size:size + n], buf[size + n:]


def pack_devfuse_reply(unique: int, error: int, payload: bytes = b"") -> bytes:
    """A complete /dev/fuse reply (out header + payload)."""
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload


def split_names(rest: bytes, count: int) -> tuple[list[bytes], bytes]:
    """Take `count` NUL-terminated names off rest; return (names, remainder)."""
    names = []
    pos = 0
    for _ in range(count):
        end = rest.find(b"\0", pos)
        if end < 0:
            raise ValueError(f"expected {count} NUL-terminated names")
        names.append(rest[pos:end])
        pos = end + 1
    return names, rest[pos:]


def max_payload_size(max_write: int, max_pages: int, page_size: int = 4096) -> int:
    """The kernel's max_payload_sz: max(8192, max_write, max_pages * page size)."""
    return max(8192, max_write, max_pages * page_size)


def layouts(generation: str = "C") -> dict[str, StructLayout]:
    """Layouts of every FUSE struct the guest packs or parses, per generation."""
    if generation not in URING_CMD_REQ:
        raise ValueError(f"unknown ABI generation {generation!r}")
    wires = [IN_HEADER, OUT_HEADER, INIT_IN, INIT_OUT, ATTR, ENTRY_OUT, ATTR_OUT,
             GETATTR_IN, SETATTR_IN, OPEN_IN, OPEN_OUT, CREATE_IN, MKDIR_IN, MKNOD_IN,
             RENAME_IN, RENAME2_IN, READ_IN, WRITE_IN, WRITE_OUT, RELEASE_IN, FLUSH_IN,
             FSYNC_IN, GETXATTR_IN, GETXATTR_OUT, ACCESS_IN, FORGET_IN, FORGET_ONE,
             BATCH_FORGET_IN, INTERRUPT_IN, STATX_IN, KSTATFS, STATFS_OUT, DIRENT,
             DIRENTPLUS, URING_ENT_IN_OUT[generation], URING_REQ_HEADER,
             URING_CMD_REQ[generation]]
    out = {w.name: w.layout() for w in wires}
    if generation == "C":
        out["fuse_uring_cmd_req"].fields["ent_zero_copy_buf_index"] = (24, 2)
    return out


def constants(generation: str = "C") -> dict[str, int]:
    """fuse.h constants the guest hard-codes for a generation, by C name."""
    out = {"FUSE_IO_URING_CMD_REGISTER": URING_CMD_REGISTER,
           "FUSE_IO_URING_CMD_COMMIT_AND_FETCH": URING_CMD_COMMIT_AND_FETCH,
           "FUSE_ASYNC_READ": ASYNC_READ, "FUSE_ASYNC_DIO": ASYNC_DIO, "FUSE_MAX_PAGES": MAX_PAGES,
           "FUSE_OVER_IO_URING": OVER_IO_URING}
    if generation == "C":
        out.update(FUSE_IO_URING_CMD_ADD_QUEUE=URING_CMD_ADD_QUEUE,
                   FUSE_IO_URING_CMD_ADD_BUFPOOL=URING_CMD_ADD_BUFPOOL,
                   FUSE_URING_ZERO_COPY=URING_ZERO_COPY, FUSE_URING_ENT_ZERO_COPY=URING_ENT_ZERO_COPY)
    if generation == "D":
        out.update(FUSE_URING_BUF_RING=URING_BUF_RING, FUSE_URING_ZERO_COPY=URING_INIT_ZERO_COPY)
    if generation == "B":
        out.update(FUSE_URING_BUFRING=URING_BUFRING)
    return out
