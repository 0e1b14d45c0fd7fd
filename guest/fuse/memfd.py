"""MemfdFs: MemoryFs whose regular files keep their bytes in one memfd per inode.

The zero-copy transports move READ/WRITE data with READ_FIXED/WRITE_FIXED on a real file
descriptor (`backing_fd`), so a server answering them from memory needs one: the parity run
(guest/parity/serve.py) and the edge servers over 7.3's zero-copy (guest/edge/served.py) use
this. Every other transport reads and writes the same bytes through read()/write().
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time

from guest.fuse import replies as R
from guest.fuse.fs import MemoryFs, err


class MemfdFs(MemoryFs):
    """MemoryFs whose regular files keep their bytes in a memfd (`backing_fd`), with hard
    links. File handles are inode numbers, as in MemoryFs."""

    def __init__(self) -> None:
        super().__init__()
        self.fds: dict[int, int] = {}

    def _fd(self, ino: int) -> int:
        fd = self.fds.get(ino)
        if fd is None:
            fd = self.fds[ino] = os.memfd_create(f"fh-parity-{ino}", os.MFD_CLOEXEC)
        return fd

    def _attr(self, n) -> R.Attr:  # noqa: ANN001
        if not stat.S_ISREG(n.mode):
            return super()._attr(n)
        size = os.fstat(self._fd(n.ino)).st_size
        return R.Attr(n.ino, size, (size + 511) // 512, n.atime, n.mtime, n.ctime, n.mode,
                      n.nlink, n.uid, n.gid)

    def setattr(self, ino, fh, mode, uid, gid, size, atime, mtime) -> R.Attr:  # noqa: ANN001
        n = self._get(ino)
        if size is not None:
            if not stat.S_ISREG(n.mode):
                raise err(errno.EISDIR)
            os.ftruncate(self._fd(ino), size)
            n.mtime = time.time()
        return super().setattr(ino, fh, mode, uid, gid, None, atime, mtime)

    def open(self, ino: int, flags: int) -> int:
        n = self._get(ino)
        if flags & os.O_TRUNC and stat.S_ISREG(n.mode):
            os.ftruncate(self._fd(ino), 0)
        return ino

    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        self._get(ino)
        return os.pread(self._fd(ino), size, offset)

    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        n = self._get(ino)
        n.mtime = n.ctime = time.time()
        return os.pwrite(self._fd(ino), data, offset)

    def link(self, ino: int, parent: int, name: bytes) -> R.Attr:
        n = self._get(ino)
        if stat.S_ISDIR(n.mode):
            raise err(errno.EPERM)
        d = self._dir(parent)
        if name in d.children:
            raise err(errno.EEXIST)
        d.children[name] = ino
        n.nlink += 1
        n.ctime = time.time()
        return self._attr(n)

    def unlink(self, parent: int, name: bytes) -> None:
        n = self._child(parent, name)
        links = n.nlink
        super().unlink(parent, name)
        if stat.S_ISREG(n.mode) and links > 1:
            n.nlink = links - 1

    def statfs(self) -> tuple[int, int, int, int, int, int, int]:
        used = sum(os.fstat(fd).st_size for fd in self.fds.values()) // 4096
        total = 1 << 20
        return total, total - used, total - used, 1 << 20, (1 << 20) - len(self.inodes), 4096, 255

    def backing_fd(self, fh: int) -> int | None:
        return self._fd(fh) if fh in self.inodes and stat.S_ISREG(self.inodes[fh].mode) else None

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
