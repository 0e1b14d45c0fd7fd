"""Mounting a FUSE file system by hand: /dev/fuse, mount(2), fusectl abort, umount.

Never stats the mount point: the minor comes from /proc/self/mountinfo.
"""

from __future__ import annotations

import ctypes
import os

from guest.uring.syscall import check, libc

MS_NOSUID, MS_NODEV = 2, 4
MNT_FORCE, MNT_DETACH = 1, 2
FUSECTL = "/sys/fs/fuse/connections"


def open_dev() -> int:
    """Open /dev/fuse read-write (close-on-exec)."""
    return os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)


def mount(fd: int, target: str, name: str = "fuse-harness",
          extra: str = "allow_other") -> None:
    """mount(2) a fuse file system served through fd at target."""
    opts = f"fd={fd},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()}"
    if extra:
        opts += "," + extra
    lc = libc()
    ret = lc.mount(name.encode(), os.fsencode(target), f"fuse.{name}".encode(),
                   ctypes.c_ulong(MS_NOSUID | MS_NODEV), opts.encode())
    check(ret, f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    check(libc().umount2(os.fsencode(target), flags), f"umount {target}")


def minor_of(target: str) -> int | None:
    """Device minor of the mount at target, from mountinfo (last match).

    /proc/thread-self, not /proc/self: it still works in a thread whose process leader the
    kernel killed (an oops inside a system call of the main thread)."""
    real = os.path.abspath(target)
    found = None
    with open("/proc/thread-self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[4].encode().decode("unicode_escape") == real:
                found = int(parts[2].split(":")[1])
    return found


def is_mounted(target: str) -> bool:
    """True if something is mounted exactly at target (mountinfo only)."""
    return minor_of(target) is not None


def ensure_fusectl() -> bool:
    """Mount fusectl on /sys/fs/fuse/connections if needed; True when usable."""
    if os.path.isdir(FUSECTL) and os.listdir(FUSECTL):
        return True
    try:
        check(libc().mount(b"none", FUSECTL.encode(), b"fusectl", ctypes.c_ulong(0), None),
              "mount fusectl")
    except OSError as exc:
        if exc.errno != 16:  # EBUSY: already mounted
            return False
    return os.path.isdir(FUSECTL)


def waiting(minor: int | None) -> int | None:
    """fusectl's count of a connection's requests in flight (`waiting`), None when there is no
    such connection."""
    ensure_fusectl()
    try:
        with open(f"{FUSECTL}/{minor}/waiting") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def abort(target: str | None = None, minor: int | None = None) -> bool:
    """Abort the connection behind target (or minor) via fusectl; True on success."""
    if minor is None and target is not None:
        minor = minor_of(target)
    if minor is None or not ensure_fusectl():
        return False
    try:
        with open(f"{FUSECTL}/{minor}/abort", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def teardown(target: str) -> None:
    """Best-effort: abort the connection, then lazily unmount every stacked mount."""
    for _ in range(4):
        minor = minor_of(target)
        if minor is None:
            return
        abort(minor=minor)
        try:
            umount(target, MNT_DETACH)
        except OSError:
            return
