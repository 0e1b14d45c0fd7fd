"""Request dispatcher shared by every transport: FUSE op -> backend call -> reply.

`Server.dispatch()` takes a parsed request (header, first arg, rest) and
returns (error, payload) or None for ops that take no reply. Counting of
paths and queues is left to the transports; errors are counted here.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
import traceback

from guest.counters import Counters
from guest.fuse import proto as P
from guest.fuse import replies as R
from guest.fuse.fs import Filesystem

Reply = tuple[int, bytes]
NO_PAYLOAD_OPS = frozenset({P.Op.FLUSH, P.Op.RELEASE, P.Op.RELEASEDIR, P.Op.FSYNC,
                            P.Op.FSYNCDIR, P.Op.ACCESS, P.Op.SETLK, P.Op.SETLKW,
                            P.Op.FALLOCATE, P.Op.DESTROY})
FORGET, BATCH_FORGET, INTERRUPT = int(P.Op.FORGET), int(P.Op.BATCH_FORGET), int(P.Op.INTERRUPT)
RENAME2, READDIRPLUS = int(P.Op.RENAME2), int(P.Op.READDIRPLUS)


def dtype(mode: int) -> int:
    """DT_* value for a st_mode."""
    return stat.S_IFMT(mode) >> 12


class Server:
    """Owns the backend and its lock; answers requests in FUSE terms."""

    def __init__(self, fs: Filesystem, counters: Counters, zero_copy_open: bool = False,
                 direct_io: bool = False) -> None:
        self.fs = fs
        self.counters = counters
        self.lock = threading.Lock()
        self.open_flags = ((P.FOPEN_IO_URING_ZERO_COPY if zero_copy_open else 0)
                           | (P.FOPEN_DIRECT_IO if direct_io else 0))
        self.dirs: dict[int, list] = {}
        self._table = {
            P.Op.LOOKUP: self._lookup, P.Op.GETATTR: self._getattr,
            P.Op.SETATTR: self._setattr, P.Op.MKDIR: self._mkdir,
            P.Op.UNLINK: self._unlink, P.Op.RMDIR: self._rmdir,
            P.Op.RENAME: self._rename, P.Op.RENAME2: self._rename,
            P.Op.CREATE: self._create, P.Op.OPEN: self._open, P.Op.READ: self._read,
            P.Op.WRITE: self._write, P.Op.RELEASE: self._release,
            P.Op.FLUSH: self._empty, P.Op.FSYNC: self._fsync,
            P.Op.FSYNCDIR: self._empty, P.Op.OPENDIR: self._opendir,
            P.Op.READDIR: self._readdir, P.Op.READDIRPLUS: self._readdir,
            P.Op.RELEASEDIR: self._releasedir, P.Op.STATFS: self._statfs,
            P.Op.SETXATTR: self._setxattr, P.Op.GETXATTR: self._getxattr,
            P.Op.LISTXATTR: self._listxattr, P.Op.REMOVEXATTR: self._removexattr,
            P.Op.ACCESS: self._empty, P.Op.DESTROY: self._empty,
        }

    def dispatch(self, h: P.InHeader, arg0: bytes, rest: bytes) -> Reply | None:
        """Serve one request; never raises for bad input (returns an errno)."""
        op = h.opcode
        fn = self._table.get(op)  # FORGET, BATCH_FORGET and INTERRUPT are not in it
        if fn is None:
            if op == FORGET:
                self._forget(h.nodeid, P.FORGET_IN.unpack(arg0)[0])
                return None
            if op == BATCH_FORGET:
                count = P.BATCH_FORGET_IN.unpack(arg0)[0]
                for i in range(min(count, len(rest) // P.FORGET_ONE.size)):
                    self._forget(*P.FORGET_ONE.unpack(rest, i * P.FORGET_ONE.size))
                return None
            if op == INTERRUPT:
                return None
            return -errno.ENOSYS, b""
        try:
            with self.lock:
                return 0, fn(h, arg0, rest)
        except OSError as exc:
            code = exc.errno or errno.EIO
        except (ValueError, IndexError):
            self.counters.bump("malformed", "")
            code = errno.EINVAL
        except Exception:  # noqa: BLE001 - a server bug must not kill the server
            traceback.print_exc(file=sys.stderr)
            self.counters.bump("exception", "")
            code = errno.EIO
        self.counters.handler_error(code)
        return -code, b""

    def _forget(self, nodeid: int, nlookup: int) -> None:
        with self.lock:
            self.fs.forget(nodeid, nlookup)

    def backing_fd(self, fh: int) -> int | None:
        """Real fd behind a file handle (passthrough backend only)."""
        return self.fs.backing_fd(fh)

    # -- handlers: (header, arg0, rest) -> reply payload ------------------
    def _empty(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        return b""

    def _lookup(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        (name,), _ = P.split_names(r, 1)
        return R.pack_entry_out(self.fs.lookup(h.nodeid, name))

    def _getattr(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        return R.pack_attr_out(self.fs.getattr(h.nodeid))

    def _setattr(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        v = dict(zip(P.SETATTR_IN.names, P.SETATTR_IN.unpack(a), strict=True))
        valid = v["valid"]

        def pick(bit: int, value: object) -> object:
            return value if valid & bit else None

        now = time.time()
        atime = now if valid & P.FATTR_ATIME_NOW else pick(
            P.FATTR_ATIME, v["atime"] + v["atimensec"] / 1e9)
        mtime = now if valid & P.FATTR_MTIME_NOW else pick(
            P.FATTR_MTIME, v["mtime"] + v["mtimensec"] / 1e9)
        attr = self.fs.setattr(h.nodeid, pick(P.FATTR_FH, v["fh"]),
                               pick(P.FATTR_MODE, v["mode"]), pick(P.FATTR_UID, v["uid"]),
                               pick(P.FATTR_GID, v["gid"]), pick(P.FATTR_SIZE, v["size"]),
                               atime, mtime)
        return R.pack_attr_out(attr)

    def _mkdir(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        mode, umask = P.MKDIR_IN.unpack(a)
        (name,), _ = P.split_names(r, 1)
        return R.pack_entry_out(self.fs.mkdir(h.nodeid, name, mode & ~umask, h.uid, h.gid))

    def _unlink(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        self.fs.unlink(h.nodeid, P.split_names(r, 1)[0][0])
        return b""

    def _rmdir(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        self.fs.rmdir(h.nodeid, P.split_names(r, 1)[0][0])
        return b""

    def _rename(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        if h.opcode == RENAME2:
            newdir, flags, _ = P.RENAME2_IN.unpack(a)
        else:
            (newdir,), flags = P.RENAME_IN.unpack(a), 0
        (old, new), _ = P.split_names(r, 2)
        self.fs.rename(h.nodeid, old, newdir, new, flags)
        return b""

    def _create(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        flags, mode, umask, _ = P.CREATE_IN.unpack(a)
        (name,), _ = P.split_names(r, 1)
        attr, fh = self.fs.create(h.nodeid, name, mode & ~umask, flags, h.uid, h.gid)
        return R.pack_entry_out(attr) + P.OPEN_OUT.pack(fh, self.open_flags, 0)

    def _open(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        flags, _ = P.OPEN_IN.unpack(a)
        fh = self.fs.open(h.nodeid, flags)
        return P.OPEN_OUT.pack(fh, self.open_flags, 0)

    def _read(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        fh, offset, size = P.READ_IN.unpack(a)[:3]
        return self.fs.read(h.nodeid, fh, offset, size)

    def _write(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        fh, offset, size = P.WRITE_IN.unpack(a)[:3]
        if len(r) < size:
            raise ValueError(f"WRITE payload {len(r)} < size {size}")
        n = self.fs.write(h.nodeid, fh, offset, r[:size])
        return P.WRITE_OUT.pack(n, 0)

    def _release(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        self.fs.release(h.nodeid, P.RELEASE_IN.unpack(a)[0])
        return b""

    def _fsync(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        self.fs.fsync(h.nodeid, P.FSYNC_IN.unpack(a)[0])
        return b""

    def _opendir(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        self.fs.getattr(h.nodeid)
        return P.OPEN_OUT.pack(0, 0, 0)

    def _releasedir(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        return b""

    def _readdir(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        _, offset, size = P.READ_IN.unpack(a)[:3]
        plus = h.opcode == READDIRPLUS
        listing = self.fs.readdir(h.nodeid)
        entries = []
        used = 0
        for name, ino, mode in listing[offset:]:
            used += R.dirent_size(len(name), plus)
            if used > size:
                break
            attr = None
            if plus and name not in (b".", b".."):
                attr = self.fs.lookup(h.nodeid, name)
                ino = attr.ino
            entries.append((name, attr, ino, dtype(mode)))
        return R.pack_dirents(entries, size, plus, base=offset)[0]

    def _statfs(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        blocks, bfree, bavail, files, ffree, bsize, namelen = self.fs.statfs()
        return P.STATFS_OUT.pack(blocks, bfree, bavail, files, ffree, bsize, namelen,
                                 bsize, 0, bytes(24))

    def _setxattr(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        size, flags = P.SETXATTR_IN_COMPAT.unpack(a)
        (name,), value = P.split_names(r, 1)
        if len(value) < size:
            raise ValueError("short xattr value")
        self.fs.setxattr(h.nodeid, name, value[:size], flags)
        return b""

    def _xattr_reply(self, want: int, value: bytes) -> bytes:
        if want == 0:
            return P.GETXATTR_OUT.pack(len(value), 0)
        if len(value) > want:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        return value

    def _getxattr(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        want, _ = P.GETXATTR_IN.unpack(a)
        (name,), _ = P.split_names(r, 1)
        return self._xattr_reply(want, self.fs.getxattr(h.nodeid, name))

    def _listxattr(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        want, _ = P.GETXATTR_IN.unpack(a)
        names = self.fs.listxattr(h.nodeid)
        return self._xattr_reply(want, b"".join(n + b"\0" for n in names))

    def _removexattr(self, h: P.InHeader, a: bytes, r: bytes) -> bytes:
        self.fs.removexattr(h.nodeid, P.split_names(r, 1)[0][0])
        return b""
