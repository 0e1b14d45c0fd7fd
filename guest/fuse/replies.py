"""Reply payload builders: fuse_attr, fuse_entry_out, fuse_attr_out, dirents.

Pure functions on top of the layouts in guest.fuse.proto.
"""

from __future__ import annotations

from typing import NamedTuple

from guest.fuse.proto import ATTR_OUT, DIRENT, DIRENTPLUS, ENTRY_OUT


class Attr(NamedTuple):
    """The attribute fields the server reports (fuse_attr minus times' nsec)."""

    ino: int
    size: int
    blocks: int
    atime: float
    mtime: float
    ctime: float
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int = 0
    blksize: int = 4096


def pack_attr_values(a: Attr) -> tuple:
    """Flat values for the fuse_attr part of a Wire (times as whole seconds, then the
    nanoseconds of each)."""
    ino, size, blocks, at, mt, ct, mode, nlink, uid, gid, rdev, blksize = a
    ats, mts, cts = int(at), int(mt), int(ct)
    return (ino, size, blocks, ats, mts, cts, int((at - ats) * 1e9), int((mt - mts) * 1e9),
            int((ct - cts) * 1e9), mode, nlink, uid, gid, rdev, blksize, 0)


_pack_entry_out = ENTRY_OUT.pack
_pack_attr_out = ATTR_OUT.pack


def pack_entry_out(a: Attr, valid: float = 0.0) -> bytes:
    """fuse_entry_out for inode a (nodeid = a.ino, generation 0)."""
    sec, nsec = int(valid), int((valid % 1) * 1e9)
    return _pack_entry_out(a.ino, 0, sec, sec, nsec, nsec, *pack_attr_values(a))


def pack_attr_out(a: Attr, valid: float = 0.0) -> bytes:
    """fuse_attr_out for inode a."""
    sec, nsec = int(valid), int((valid % 1) * 1e9)
    return _pack_attr_out(sec, nsec, 0, *pack_attr_values(a))


def dirent_size(namelen: int, plus: bool) -> int:
    """FUSE_DIRENT_SIZE / FUSE_DIRENTPLUS_SIZE (8-byte aligned)."""
    base = (DIRENTPLUS.size if plus else DIRENT.size) + namelen
    return (base + 7) & ~7


def pack_dirents(entries: list[tuple[bytes, Attr | None, int, int]], size: int,
                 plus: bool, base: int = 0) -> tuple[bytes, int]:
    """Pack (name, attr, ino, dtype) records until `size` bytes are used.

    Returns (data, count). Record i gets off = base + i + 1 (the directory
    index of the next entry). In READDIRPLUS an entry whose attr is None gets
    an all-zero fuse_entry_out (nodeid 0: the kernel makes no dentry for it).
    """
    out = bytearray()
    count = 0
    for i, (name, attr, ino, dtype) in enumerate(entries):
        rec = dirent_size(len(name), plus)
        if len(out) + rec > size:
            break
        dirent = DIRENT.pack(ino, base + i + 1, len(name), dtype) + name
        if plus:
            head = pack_entry_out(attr) if attr is not None else bytes(ENTRY_OUT.size)
            dirent = head + dirent
        out += dirent + bytes(rec - len(dirent))
        count += 1
    return bytes(out), count
