"""io_uring syscalls through libc.syscall, and the one errno wrapper.

libc is loaded lazily; importing this module has no side effects.
"""

from __future__ import annotations

import ctypes
import os

NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_IO_URING_REGISTER = 427

_LIBC: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """Return the process libc, opened with use_errno (loaded on first use)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.syscall.restype = ctypes.c_long
    return _LIBC


def check(ret: int, what: str = "") -> int:
    """Return ret, or raise OSError with the thread's errno when ret is -1."""
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}" if what else os.strerror(err))
    return ret


def _syscall(nr: int, *args: int) -> int:
    cargs = [ctypes.c_long(a) for a in args]
    return check(libc().syscall(ctypes.c_long(nr), *cargs), f"syscall {nr}")


def io_uring_setup(entries: int, params_addr: int) -> int:
    """io_uring_setup(2): return the new ring fd."""
    return _syscall(NR_IO_URING_SETUP, entries, params_addr)


_C_LONG = ctypes.c_long
_NR_ENTER = _C_LONG(NR_IO_URING_ENTER)
_NULL = _C_LONG(0)
_ENTER_WHAT = f"syscall {NR_IO_URING_ENTER}"


def io_uring_enter(fd: int, to_submit: int, min_complete: int, flags: int) -> int:
    """io_uring_enter(2) without a signal mask; EINTR surfaces as InterruptedError. (Called
    for every batch of requests: _syscall's steps, written out.)"""
    c_long = _C_LONG
    ret = (_LIBC or libc()).syscall(_NR_ENTER, c_long(fd), c_long(to_submit), c_long(min_complete),
                                    c_long(flags), _NULL, _NULL)
    return check(ret, _ENTER_WHAT) if ret == -1 else ret


def io_uring_register(fd: int, opcode: int, arg_addr: int, nr_args: int) -> int:
    """io_uring_register(2)."""
    return _syscall(NR_IO_URING_REGISTER, fd, opcode, arg_addr, nr_args)
