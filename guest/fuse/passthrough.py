"""Passthrough backend: FUSE operations onto a backing directory.

Node ids map to paths below the backing root; file handles map to real fds,
which the zero-copy transport uses for READ_FIXED/WRITE_FIXED.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat

from guest.fuse.fs import RENAME_EXCHANGE, RENAME_NOREPLACE, err
from guest.fuse.proto import ROOT_ID
from guest.fuse.replies import Attr


class PassthroughFs:
    """Serve the tree below `root`; node ids are assigned on lookup."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        st = os.lstat(self.root)
        self.paths: dict[int, str] = {ROOT_ID: self.root}
        self.ids: dict[tuple[int, int], int] = {(st.st_dev, st.st_ino): ROOT_ID}
        self.fds: dict[int, int] = {}
        self._fh = itertools.count(1)
        self._next = itertools.count(ROOT_ID + 1)

    def _path(self, ino: int) -> str:
        try:
            return self.paths[ino]
        except KeyError:
            raise err(errno.ESTALE) from None

    def _child(self, parent: int, name: bytes) -> str:
        if b"/" in name or name in (b"", b".", b".."):
            if name == b".":
                return self._path(parent)
            if name == b"..":
                return os.path.dirname(self._path(parent)) if parent != ROOT_ID else self.root
            raise err(errno.EINVAL)
        return os.path.join(self._path(parent), os.fsdecode(name))

    def _attr(self, ino: int, st: os.stat_result) -> Attr:
        return Attr(ino, st.st_size, st.st_blocks, st.st_atime, st.st_mtime, st.st_ctime,
                    st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev)

    def _node(self, path: str) -> Attr:
        st = os.lstat(path)
        key = (st.st_dev, st.st_ino)
        ino = self.ids.get(key)
        if ino is None:
            ino = next(self._next)
            self.ids[key] = ino
        self.paths[ino] = path
        return self._attr(ino, st)

    def lookup(self, parent: int, name: bytes) -> Attr:
        return self._node(self._child(parent, name))

    def forget(self, ino: int, nlookup: int) -> None:
        return None

    def getattr(self, ino: int) -> Attr:
        return self._attr(ino, os.lstat(self._path(ino)))

    def setattr(self, ino, fh, mode, uid, gid, size, atime, mtime) -> Attr:  # noqa: ANN001
        path = self._path(ino)
        if mode is not None:
            os.chmod(path, mode & 0o7777)
        if uid is not None or gid is not None:
            os.lchown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        if size is not None:
            fd = self.fds.get(fh) if fh is not None else None
            if fd is not None:
                os.ftruncate(fd, size)
            else:
                os.truncate(path, size)
        if atime is not None or mtime is not None:
            st = os.lstat(path)
            os.utime(path, (st.st_atime if atime is None else atime,
                            st.st_mtime if mtime is None else mtime))
        return self.getattr(ino)

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        path = self._child(parent, name)
        os.mkdir(path, mode & 0o7777)
        return self._node(path)

    def unlink(self, parent: int, name: bytes) -> None:
        os.unlink(self._child(parent, name))

    def rmdir(self, parent: int, name: bytes) -> None:
        os.rmdir(self._child(parent, name))

    def rename(self, parent: int, name: bytes, newparent: int, newname: bytes,
               flags: int) -> None:
        src, dst = self._child(parent, name), self._child(newparent, newname)
        if flags & RENAME_EXCHANGE:
            raise err(errno.EINVAL)
        if flags & RENAME_NOREPLACE and os.path.lexists(dst):
            raise err(errno.EEXIST)
        os.rename(src, dst)
        prefix = src + os.sep
        for ino, path in list(self.paths.items()):
            if path == src:
                self.paths[ino] = dst
            elif path.startswith(prefix):
                self.paths[ino] = dst + path[len(src):]

    def _open_fd(self, path: str, flags: int, mode: int = 0) -> int:
        base = os.O_RDWR | (flags & os.O_TRUNC) | (flags & (os.O_CREAT | os.O_EXCL))
        try:
            fd = os.open(path, base | os.O_CLOEXEC, mode)
        except PermissionError:
            fd = os.open(path, (flags & ~(os.O_APPEND | os.O_DIRECT)) | os.O_CLOEXEC, mode)
        fh = next(self._fh)
        self.fds[fh] = fd
        return fh

    def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int,
               gid: int) -> tuple[Attr, int]:
        path = self._child(parent, name)
        fh = self._open_fd(path, flags | os.O_CREAT, mode & 0o7777)
        return self._node(path), fh

    def open(self, ino: int, flags: int) -> int:
        path = self._path(ino)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return 0
        return self._open_fd(path, flags)

    def _fd(self, fh: int) -> int:
        try:
            return self.fds[fh]
        except KeyError:
            raise err(errno.EBADF) from None

    def read(self, ino: int, fh: int, offset: int, size: int) -> bytes:
        return os.pread(self._fd(fh), size, offset)

    def write(self, ino: int, fh: int, offset: int, data: bytes) -> int:
        return os.pwrite(self._fd(fh), data, offset)

    def release(self, ino: int, fh: int) -> None:
        fd = self.fds.pop(fh, None)
        if fd is not None:
            os.close(fd)

    def fsync(self, ino: int, fh: int) -> None:
        fd = self.fds.get(fh)
        if fd is not None:
            os.fsync(fd)

    def readdir(self, ino: int) -> list[tuple[bytes, int, int]]:
        path = self._path(ino)
        out = [(b".", ino, stat.S_IFDIR), (b"..", ROOT_ID, stat.S_IFDIR)]
        with os.scandir(path) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                out.append((os.fsencode(e.name), st.st_ino, st.st_mode))
        return out

    def statfs(self) -> tuple[int, int, int, int, int, int, int]:
        s = os.statvfs(self.root)
        return s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize, s.f_namemax

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        os.setxattr(self._path(ino), name, value, flags, follow_symlinks=False)

    def getxattr(self, ino: int, name: bytes) -> bytes:
        return os.getxattr(self._path(ino), name, follow_symlinks=False)

    def listxattr(self, ino: int) -> list[bytes]:
        return [os.fsencode(n) for n in os.listxattr(self._path(ino), follow_symlinks=False)]

    def removexattr(self, ino: int, name: bytes) -> None:
        os.removexattr(self._path(ino), name, follow_symlinks=False)

    def backing_fd(self, fh: int) -> int | None:
        return self.fds.get(fh)
