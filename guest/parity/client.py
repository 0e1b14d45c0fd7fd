"""The client of a parity run: one forked process runs a call sequence in lockstep.

The scenario writes one byte per call to the child's gate pipe; the child runs the next
call and writes one JSON line back. A call that does not answer within its timeout is
`hung` (the scenario then aborts the connection): a wedged client never wedges the suite.
Every call opens what it needs and closes it again, so any subsequence of a sequence is a
valid sequence (the shrinker relies on that). Results keep what must agree between
transports: return values, errnos, bytes (length and digest), stat type, permissions,
size and nlink; never inode numbers or times.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import select
import signal
import stat
import time

from guest.edge.clients import detach_stdio
from guest.uring.syscall import check, libc

PAGE = mmap.PAGESIZE
#: getdents64(2) by os.uname().machine (arch/x86/entry/syscalls, include/uapi/asm-generic).
NR_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "riscv64": 61}
#: Pause before each call: a jiffy passes, so entry and attribute timeouts of 0 expire the
#: same way on every transport (and nothing of the previous call is still in flight).
SETTLE = 0.012


def data_of(seed: int, size: int) -> bytes:
    """The bytes a write or setxattr call writes (deterministic per seed)."""
    return random.Random(seed).randbytes(size)


def digest(data: bytes) -> dict:
    return {"n": len(data), "sha": hashlib.sha256(data).hexdigest()[:16]}


def _rw(fd: int, off: int, size: int, direct: bool, data: bytes | None) -> object:
    """pread/pwrite; O_DIRECT I/O goes through a page-aligned buffer."""
    if not direct or size == 0:
        return os.pwrite(fd, data, off) if data is not None else digest(os.pread(fd, size, off))
    buf = mmap.mmap(-1, -(-size // PAGE) * PAGE)
    try:
        if data is not None:
            buf[:size] = data
            return os.pwritev(fd, [memoryview(buf)[:size]], off)
        n = os.preadv(fd, [memoryview(buf)[:size]], off)
        return digest(bytes(buf[:n]))
    finally:
        buf.close()


def _mmap(p: str, off: int, size: int, data: bytes | None) -> object:
    """Read or write through a shared mapping, inside the file's size only (no SIGBUS)."""
    fd = os.open(p, os.O_RDWR if data is not None else os.O_RDONLY)
    try:
        end = min(os.fstat(fd).st_size, off + size)
        if end <= off:
            return {"n": 0}
        start = off - off % PAGE
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if data is not None else 0)
        mm = mmap.mmap(fd, end - start, mmap.MAP_SHARED, prot, offset=start)
        try:
            if data is None:
                return digest(mm[off - start:end - start])
            mm[off - start:end - start] = data[:end - off]
            mm.flush()  # msync(MS_SYNC): the WRITEs happen inside this call
            return {"n": end - off}
        finally:
            mm.close()
    finally:
        os.close(fd)


def _stat(p: str) -> dict:
    st = os.stat(p)
    return {"type": stat.S_IFMT(st.st_mode) >> 12, "perm": oct(stat.S_IMODE(st.st_mode)),
            "size": st.st_size, "nlink": st.st_nlink}


def listdir(path: str) -> list[str]:
    """The sorted names in directory path but . and .., read with getdents64(2) itself:
    glibc's readdir() (os.listdir, os.scandir) takes ENOENT for the end of the directory,
    and ENOENT is how the kernel ends a READDIRPLUS whose reply it refused over io-uring.
    OSError with getdents64's errno; an architecture without a known syscall number too."""
    nr = NR_GETDENTS64.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"getdents64: no syscall number for {os.uname().machine}")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    names = []
    try:
        buf = ctypes.create_string_buffer(32768)
        while True:
            n = check(libc().syscall(ctypes.c_long(nr), ctypes.c_long(fd), buf, ctypes.c_long(len(buf))),
                      "getdents64")
            if n == 0:
                break
            raw, pos = buf.raw[:n], 0
            while pos < n:  # struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
                reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
                if name not in (b".", b".."):
                    names.append(os.fsdecode(name))
                pos += reclen
    finally:
        os.close(fd)
    return sorted(names)


def run_call(mnt: str, c: dict) -> object:
    """Run one call against the mount at mnt; its value (OSError propagates)."""
    op = c["op"]
    p = os.path.join(mnt, c.get("path", ""))
    if op == "create":
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return "created"
    if op in ("write", "read"):
        flags = (os.O_WRONLY if op == "write" else os.O_RDONLY) | (os.O_DIRECT if c["direct"] else 0)
        fd = os.open(p, flags)
        try:
            data = data_of(c["data"], c["size"]) if op == "write" else None
            return _rw(fd, c["off"], c["size"], c["direct"], data)
        finally:
            os.close(fd)
    if op == "mmap_read":
        return _mmap(p, c["off"], c["size"], None)
    if op == "mmap_write":
        return _mmap(p, c["off"], c["size"], data_of(c["data"], c["size"]))
    if op == "truncate":
        os.truncate(p, c["size"])
        return _stat(p)["size"]
    if op in ("rename", "link"):
        (os.rename if op == "rename" else os.link)(os.path.join(mnt, c["src"]), os.path.join(mnt, c["dst"]))
        return op
    if op in ("unlink", "mkdir", "rmdir"):
        {"unlink": os.unlink, "mkdir": os.mkdir, "rmdir": os.rmdir}[op](p)
        return op
    if op == "readdir":
        return listdir(p)
    if op == "stat":
        return _stat(p)
    if op == "statfs":
        s = os.statvfs(mnt)
        return [s.f_bsize, s.f_blocks, s.f_bfree, s.f_files, s.f_namemax]
    if op == "setxattr":
        os.setxattr(p, c["name"], data_of(c["data"], c["size"]), c["flags"])
        return "set"
    if op == "getxattr":
        return digest(os.getxattr(p, c["name"]))
    if op == "listxattr":
        return sorted(os.listxattr(p))
    if op == "removexattr":
        os.removexattr(p, c["name"])
        return "removed"
    raise ValueError(f"unknown op {op!r}")


def outcome(mnt: str, c: dict) -> dict:
    """{"ok": value} or {"err": ERRNO name}; any other exception: {"died": its text}."""
    try:
        return {"ok": run_call(mnt, c)}
    except OSError as exc:
        return {"err": errno.errorcode.get(exc.errno, str(exc.errno))}
    except Exception as exc:  # noqa: BLE001 - reported as the call's result, never a traceback
        return {"died": f"{type(exc).__name__}: {exc}"}


class SequenceClient:
    """A forked child that runs `calls` on mnt, one per `step()`."""

    def __init__(self, mnt: str, calls: list[dict], cpu: int = 0) -> None:
        gr, self.gate = os.pipe()
        self.rfd, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # never returns
            try:
                os.close(self.gate)
                os.close(self.rfd)
                detach_stdio()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, {cpu})
                os.umask(0o022)
                for c in calls:
                    if os.read(gr, 1) != b"g":
                        break
                    time.sleep(SETTLE)
                    os.write(w, json.dumps(outcome(mnt, c)).encode() + b"\n")
            finally:
                os._exit(0)
        os.close(gr)
        os.close(w)
        self.buf = b""

    def step(self, timeout: float) -> dict:
        """Let the child run its next call; its result, or {"hung": timeout} / {"died": ...}."""
        try:
            os.write(self.gate, b"g")
        except OSError as exc:
            return {"died": f"gate: {exc.strerror}"}
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                return {"hung": round(timeout, 1)}
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return {"died": "the client exited (killed by a signal?)"}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> bool:
        """Kill the child and reap it; True once reaped (bounded: a child stuck in the
        kernel is left to the connection's abort and the scenario's cleanup)."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        for fd in (self.gate, self.rfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return True
            except ChildProcessError:
                return True
            time.sleep(0.02)
        return False
