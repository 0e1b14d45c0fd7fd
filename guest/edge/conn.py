"""A hand-driven FUSE connection: mount, INIT, raw uring commands with deadlines.

`Conn` stops wherever a scenario wants (before mount, before the INIT reply,
after it) and sends single commands, waiting a bounded time for their CQE.
`SmallRing` is an io_uring *without* SQE128 (catalog G1).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time

from guest import mount as M
from guest.edge import sqe as S
from guest.edge.core import Ctx
from guest.fuse import proto as P
from guest.negotiate import Init, negotiate
from guest.transports.base import nr_possible_cpus
from guest.uring import abi, syscall
from guest.uring.ring import Ring

CMD_UD = 7 << 48  # user_data kind of single commands (never an engine entry)


def ensure_enable_uring() -> str:
    """Turn on fuse.enable_uring if it is off; return the value seen."""
    path = "/sys/module/fuse/parameters/enable_uring"
    try:
        with open(path) as f:
            val = f.read().strip()
        if val not in ("Y", "1"):
            with open(path, "w") as f:
                f.write("1")
        return val
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


class Conn:
    """/dev/fuse fd, an optional mount, the INIT exchange and a ring."""

    def __init__(self, ctx: Ctx, tag: str) -> None:
        self.ctx = ctx
        self.fd = M.open_dev()
        ctx.closers.append(self.close)
        self.mnt = ""
        self.tag = tag
        self.init: Init | None = None
        self.ring: Ring | None = None
        self.nr_queues = nr_possible_cpus()
        self.stray: list[tuple[int, int]] = []
        self._seq = 0

    def mount(self) -> str:
        self.mnt = self.ctx.mountpoint(self.tag)
        M.mount(self.fd, self.mnt)
        return self.mnt

    def read_init(self) -> tuple[P.InHeader, bytes]:
        buf = os.read(self.fd, 1 << 20)
        h, arg0, _ = P.split_devfuse(buf)
        if h.opcode != P.Op.INIT:
            raise RuntimeError(f"first request is {P.op_name(h.opcode)}, not INIT")
        return h, arg0

    def reply_init(self, h: P.InHeader, arg0: bytes, want_uring: bool = True, max_write: int = 131072,
                   max_pages: int | None = None, max_background: int = 64, extra: int = 0) -> Init:
        payload, self.init = negotiate(arg0, want_uring, max_write, max_pages, max_background, extra)
        os.write(self.fd, P.pack_devfuse_reply(h.unique, 0, payload))
        return self.init

    def setup(self, want_uring: bool = True, max_write: int = 131072, max_pages: int | None = None,
              max_background: int = 64, extra: int = 0) -> Init:
        """Mount and answer INIT (with FUSE_OVER_IO_URING when want_uring; max_pages asks FUSE_MAX_PAGES)."""
        self.mount()
        h, arg0 = self.read_init()
        return self.reply_init(h, arg0, want_uring, max_write, max_pages, max_background, extra)

    @property
    def bufpool(self) -> bool:
        return bool(self.init and self.init.offered_bufpool)

    def get_ring(self) -> Ring:
        if self.ring is None:
            self.ring = Ring(64, cq_entries=256)
        return self.ring

    def cmd(self, cmd_op: int, req: bytes, addr: int = 0, length: int = 0,
            cmd_flags: int = 0, buf_index: int = 0, timeout: float = 3.0,
            pad1: int = 0, ring: Ring | None = None) -> int | None:
        """Submit one URING_CMD on ring (default: this connection's own) and wait for its
        CQE; None when none came (parked)."""
        ring = self.get_ring() if ring is None else ring
        self._seq += 1
        ud = CMD_UD | self._seq
        off = ring.get_sqe()
        slot = S.uring_cmd_sqe(self.fd, cmd_op, ud, req, addr, length, cmd_flags, buf_index,
                               pad1)
        ring.sqes[off:off + S.SQE_SIZE] = slot
        return self.wait_ud(ring, ud, timeout)

    def wait_ud(self, ring: Ring, ud: int, timeout: float) -> int | None:
        end = time.monotonic() + min(timeout, self.ctx.left())
        while True:
            ring.submit()
            for got, res, _ in ring.reap():
                if got == ud:
                    return res
                self.stray.append((got, res))
            if time.monotonic() > end:
                return None
            time.sleep(0.005)

    def abort(self) -> bool:
        return M.abort(self.mnt) if self.mnt else False

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SmallRing:
    """An io_uring with 64-byte SQEs (no IORING_SETUP_SQE128)."""

    def __init__(self, entries: int = 8) -> None:
        self.params = abi.Params()
        self.fd = syscall.io_uring_setup(entries, ctypes.addressof(self.params))
        p = self.params
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        size = max(p.sq_off.array + p.sq_entries * 4, p.cq_off.cqes + p.cq_entries * 16)
        self.rings = mmap.mmap(self.fd, size, flags, prot, offset=abi.OFF_SQ_RING)
        self.sqes = mmap.mmap(self.fd, p.sq_entries * S.SMALL_SQE_SIZE, flags, prot,
                              offset=abi.OFF_SQES)

    def u32(self, off: int) -> ctypes.c_uint32:
        return ctypes.c_uint32.from_buffer(self.rings, off)

    def submit_one(self, slot: bytes, timeout: float) -> int | None:
        """Submit one 64-byte SQE and wait for its CQE result."""
        p = self.params
        tail = self.u32(p.sq_off.tail)
        mask = self.u32(p.sq_off.ring_mask).value
        idx = tail.value & mask
        self.sqes[idx * 64:(idx + 1) * 64] = slot
        self.u32(p.sq_off.array + 4 * idx).value = idx
        tail.value += 1
        syscall.io_uring_enter(self.fd, 1, 0, 0)
        end = time.monotonic() + timeout
        head, ctail = self.u32(p.cq_off.head), self.u32(p.cq_off.tail)
        while time.monotonic() < end:
            if head.value != ctail.value:
                cmask = self.u32(p.cq_off.ring_mask).value
                off = p.cq_off.cqes + (head.value & cmask) * 16
                _, res, _ = abi.CQE.unpack_from(self.rings, off)
                head.value += 1
                return res
            syscall.io_uring_enter(self.fd, 0, 0, abi.ENTER_GETEVENTS)
            time.sleep(0.005)
        return None

    def close(self) -> None:
        os.close(self.fd)
