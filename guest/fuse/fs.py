"""In-memory filesystem: the operations the dispatcher calls, in FUSE terms.

Errors are raised as OSError(errno). Thread-safe through one lock held by
the caller (guest.server). No transport or wire knowledge.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Protocol

from guest.fuse.proto import ROOT_ID
from guest.fuse.replies import Attr

XATTR_CREATE, XATTR_REPLACE = 1, 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


class Filesystem(Protocol):
    """What guest.server needs from a backend (memory or passthrough)."""

    def lookup(self, parent: int, name: bytes) -> Attr: ...
    def forget(self, ino: int, nlookup: int) -> None: ...
    def getattr(self, ino: int) -> Attr: ...
    def setattr(self, ino: int, fh: int | None, mode: int | None, uid: int | None,
                gid: int | None, size: int | None, atime: float | None,
                mtime: float | None) -> Attr: ...
    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr: ...
    def unlink(self, parent: int, name: bytes) -> None: ...
    def rmdir(self, parent: int, name: bytes) -> None: ...
    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int) -> None: ...
    def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int,
               gid: int) -> tuple[Attr, int]: ...
    def open(self, ino: int, flags: int) -> int: ...
    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes: ...
    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int: ...
    def release(self, ino: int, fh: int) -> None: ...
    def fsync(self, ino: int, fh: int) -> None: ...
    def readdir(self, ino: int) -> list[tuple[bytes, int, int]]: ...
    def statfs(self) -> tuple[int, int, int, int, int, int, int]: ...
    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None: ...
    def getxattr(self, ino: int, name: bytes) -> bytes: ...
    def listxattr(self, ino: int) -> list[bytes]: ...
    def removexattr(self, ino: int, name: bytes) -> None: ...
    def backing_fd(self, fh: int) -> int | None: ...


def err(code: int) -> OSError:
    """OSError carrying an errno."""
    return OSError(code, os.strerror(code))


@dataclass
class Inode:
    """One in-memory inode."""

    ino: int
    mode: int
    uid: int
    gid: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] = field(default_factory=dict)
    parent: int = ROOT_ID
    nlink: int = 1
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    atime: float = field(default_factory=time.time)
    mtime: float = field(default_factory=time.time)
    ctime: float = field(default_factory=time.time)


class MemoryFs:
    """A tree of Inodes; file handles are the inode numbers."""

    def __init__(self, uid: int = 0, gid: int = 0) -> None:
        self.inodes: dict[int, Inode] = {ROOT_ID: Inode(ROOT_ID, stat.S_IFDIR | 0o777,
                                                         uid, gid, nlink=2)}
        self._next = ROOT_ID + 1

    def _get(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            raise err(errno.ENOENT) from None

    def _dir(self, ino: int) -> Inode:
        node = self._get(ino)
        if not stat.S_ISDIR(node.mode):
            raise err(errno.ENOTDIR)
        return node

    def _attr(self, n: Inode) -> Attr:
        size = len(n.data) if stat.S_ISREG(n.mode) else 4096
        return Attr(n.ino, size, (size + 511) // 512, n.atime, n.mtime, n.ctime,
                    n.mode, n.nlink, n.uid, n.gid)

    def _child(self, parent: int, name: bytes) -> Inode:
        d = self._dir(parent)
        if name == b".":
            return d
        if name == b"..":
            return self._get(d.parent)
        ino = d.children.get(name)
        if ino is None:
            raise err(errno.ENOENT)
        return self._get(ino)

    def _new(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Inode:
        d = self._dir(parent)
        if name in d.children:
            raise err(errno.EEXIST)
        if len(name) > 255:
            raise err(errno.ENAMETOOLONG)
        node = Inode(self._next, mode, uid, gid, parent=parent)
        self._next += 1
        self.inodes[node.ino] = node
        d.children[name] = node.ino
        d.mtime = d.ctime = time.time()
        return node

    def lookup(self, parent: int, name: bytes) -> Attr:
        return self._attr(self._child(parent, name))

    def forget(self, ino: int, nlookup: int) -> None:
        node = self.inodes.get(ino)
        if node is not None and node.nlink == 0 and ino != ROOT_ID:
            del self.inodes[ino]

    def getattr(self, ino: int) -> Attr:
        return self._attr(self._get(ino))

    def setattr(self, ino, fh, mode, uid, gid, size, atime, mtime) -> Attr:  # noqa: ANN001
        n = self._get(ino)
        if mode is not None:
            n.mode = (n.mode & ~0o7777) | (mode & 0o7777)
        if uid is not None:
            n.uid = uid
        if gid is not None:
            n.gid = gid
        if size is not None:
            if stat.S_ISDIR(n.mode):
                raise err(errno.EISDIR)
            if size < len(n.data):
                del n.data[size:]
            else:
                n.data.extend(bytes(size - len(n.data)))
            n.mtime = time.time()
        if atime is not None:
            n.atime = atime
        if mtime is not None:
            n.mtime = mtime
        n.ctime = time.time()
        return self._attr(n)

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        node = self._new(parent, name, stat.S_IFDIR | (mode & 0o7777), uid, gid)
        node.nlink = 2
        self.inodes[parent].nlink += 1
        return self._attr(node)

    def _remove(self, parent: int, name: bytes, want_dir: bool) -> None:
        node = self._child(parent, name)
        if name in (b".", b".."):
            raise err(errno.EINVAL)
        is_dir = stat.S_ISDIR(node.mode)
        if want_dir and not is_dir:
            raise err(errno.ENOTDIR)
        if not want_dir and is_dir:
            raise err(errno.EISDIR)
        if is_dir and node.children:
            raise err(errno.ENOTEMPTY)
        d = self.inodes[parent]
        del d.children[name]
        d.mtime = d.ctime = time.time()
        node.nlink = 0
        if is_dir:
            d.nlink -= 1

    def unlink(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, False)

    def rmdir(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, True)

    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int) -> None:
        src = self._child(parent, name)
        dst_dir = self._dir(newparent)
        old = dst_dir.children.get(newname)
        if flags & RENAME_EXCHANGE:
            if old is None:
                raise err(errno.ENOENT)
            self.inodes[parent].children[name] = old
            dst_dir.children[newname] = src.ino
            self.inodes[old].parent, src.parent = parent, newparent
            return
        if old is not None:
            if flags & RENAME_NOREPLACE:
                raise err(errno.EEXIST)
            if old == src.ino:
                return
            target = self.inodes[old]
            if stat.S_ISDIR(target.mode):
                if not stat.S_ISDIR(src.mode):
                    raise err(errno.EISDIR)
                if target.children:
                    raise err(errno.ENOTEMPTY)
                dst_dir.nlink -= 1
            elif stat.S_ISDIR(src.mode):
                raise err(errno.ENOTDIR)
            target.nlink = 0
        del self.inodes[parent].children[name]
        dst_dir.children[newname] = src.ino
        if stat.S_ISDIR(src.mode) and parent != newparent:
            self.inodes[parent].nlink -= 1
            dst_dir.nlink += 1
        src.parent = newparent
        src.ctime = time.time()

    def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int,
               gid: int) -> tuple[Attr, int]:
        node = self._new(parent, name, stat.S_IFREG | (mode & 0o7777), uid, gid)
        return self._attr(node), node.ino

    def open(self, ino: int, flags: int) -> int:
        node = self._get(ino)
        if flags & os.O_TRUNC and stat.S_ISREG(node.mode):
            node.data.clear()
        return ino

    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        n = self._get(ino)
        return bytes(n.data[offset:offset + size])

    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        n = self._get(ino)
        end = offset + len(data)
        if end > len(n.data):
            n.data.extend(bytes(end - len(n.data)))
        n.data[offset:end] = data
        n.mtime = n.ctime = time.time()
        return len(data)

    def release(self, ino: int, fh: int) -> None:
        return None

    def fsync(self, ino: int, fh: int) -> None:
        return None

    def readdir(self, ino: int) -> list[tuple[bytes, int, int]]:
        d = self._dir(ino)
        out = [(b".", d.ino, d.mode), (b"..", d.parent, self.inodes[d.parent].mode)]
        out += [(name, i, self.inodes[i].mode) for name, i in d.children.items()]
        return out

    def statfs(self) -> tuple[int, int, int, int, int, int, int]:
        used = sum(len(n.data) for n in self.inodes.values()) // 4096
        total = 1 << 20
        return total, total - used, total - used, 1 << 20, (1 << 20) - len(self.inodes), 4096, 255

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        n = self._get(ino)
        if flags & XATTR_CREATE and name in n.xattrs:
            raise err(errno.EEXIST)
        if flags & XATTR_REPLACE and name not in n.xattrs:
            raise err(errno.ENODATA)
        n.xattrs[name] = value

    def getxattr(self, ino: int, name: bytes) -> bytes:
        try:
            return self._get(ino).xattrs[name]
        except KeyError:
            raise err(errno.ENODATA) from None

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self._get(ino).xattrs)

    def removexattr(self, ino: int, name: bytes) -> None:
        if self._get(ino).xattrs.pop(name, None) is None:
            raise err(errno.ENODATA)

    def backing_fd(self, fh: int) -> int | None:
        return None
