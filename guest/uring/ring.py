"""Ring: owns an io_uring fd, its mmapped SQ/CQ/SQE areas, submit and reap.

No FUSE knowledge. Not thread-safe: one thread submits and reaps.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
from collections import deque

from guest.uring import abi, syscall

ZERO_SQE = bytes(abi.SQE_SIZE)
CMD_ROOM = abi.SQE_SIZE - abi.SQE_CMD_OFFSET  # bytes of sqe->cmd in a 128-byte SQE
URING_CMD = int(abi.Op.URING_CMD)
_pack_sqe = abi.SQE_FULL.pack_into
_pack_cmd_sqe = abi.SQE_CMD_FULL.pack_into


def addr_of(buf: object) -> int:
    """Address of a writable buffer (mmap, bytearray, ctypes array)."""
    if isinstance(buf, ctypes.Array | ctypes.Structure):
        return ctypes.addressof(buf)
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class Ring:
    """An io_uring with 128-byte SQEs."""

    def __init__(self, entries: int, cq_entries: int = 0, flags: int = 0) -> None:
        self.params = abi.Params()
        flags |= abi.Setup.SQE128
        if cq_entries:
            flags |= abi.Setup.CQSIZE
            self.params.cq_entries = cq_entries
        self.params.flags = flags
        #: IORING_SETUP_DEFER_TASKRUN: completions are posted only while the submitter task is
        #: inside io_uring_enter(IORING_ENTER_GETEVENTS), so every enter asks for events.
        self.deferred = bool(flags & abi.Setup.DEFER_TASKRUN)
        self.fd = syscall.io_uring_setup(entries, ctypes.addressof(self.params))
        try:
            self._map()
        except BaseException:
            os.close(self.fd)
            raise
        self._refs: list[object] = []  # memory the kernel may read later
        self._timespecs: deque[abi.KernelTimespec] = deque(maxlen=1024)

    def _map(self) -> None:
        p = self.params
        sq_size = p.sq_off.array + p.sq_entries * 4
        cq_size = p.cq_off.cqes + p.cq_entries * abi.CQE.size
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        if p.features & abi.FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
            self.sq_mm = mmap.mmap(self.fd, sq_size, flags, prot, offset=abi.OFF_SQ_RING)
            self.cq_mm = self.sq_mm
        else:
            self.sq_mm = mmap.mmap(self.fd, sq_size, flags, prot, offset=abi.OFF_SQ_RING)
            self.cq_mm = mmap.mmap(self.fd, cq_size, flags, prot, offset=abi.OFF_CQ_RING)
        self.sqes = mmap.mmap(self.fd, p.sq_entries * abi.SQE_SIZE, flags, prot,
                              offset=abi.OFF_SQES)
        u32 = ctypes.c_uint32
        self._sq_head = u32.from_buffer(self.sq_mm, p.sq_off.head)
        self._sq_tail = u32.from_buffer(self.sq_mm, p.sq_off.tail)
        self.sq_mask = u32.from_buffer(self.sq_mm, p.sq_off.ring_mask).value
        self.sq_entries = p.sq_entries
        self._sq_array = (u32 * p.sq_entries).from_buffer(self.sq_mm, p.sq_off.array)
        self._cq_head = u32.from_buffer(self.cq_mm, p.cq_off.head)
        self._cq_tail = u32.from_buffer(self.cq_mm, p.cq_off.tail)
        self._cq_overflow = u32.from_buffer(self.cq_mm, p.cq_off.overflow)
        self.cq_mask = u32.from_buffer(self.cq_mm, p.cq_off.ring_mask).value
        self.cq_entries = p.cq_entries
        self._cqes_off = p.cq_off.cqes
        self._local_tail = self._sq_tail.value

    # -- submission -------------------------------------------------------
    def pending(self) -> int:
        """SQEs queued in the ring but not yet consumed by the kernel."""
        return (self._local_tail - self._sq_head.value) & 0xFFFFFFFF

    def free_slots(self) -> int:
        """SQ slots still available before the next submit."""
        return self.sq_entries - self.pending()

    def get_sqe(self) -> int:
        """Reserve and zero the next SQE slot; return its byte offset in self.sqes."""
        off = self._reserve()
        self.sqes[off:off + abi.SQE_SIZE] = ZERO_SQE
        return off

    def _reserve(self) -> int:
        """Reserve the next SQE slot without zeroing it (the caller writes all 128 bytes);
        its byte offset in self.sqes. Submits first when the ring is full; OSError(EBUSY)
        when it stays full."""
        tail = self._local_tail
        if self.sq_entries - ((tail - self._sq_head.value) & 0xFFFFFFFF) == 0:
            self.submit()
            if self.free_slots() == 0:
                raise OSError(errno.EBUSY, "submission queue full")
        idx = tail & self.sq_mask
        self._sq_array[idx] = idx
        self._local_tail = (tail + 1) & 0xFFFFFFFF
        return idx * abi.SQE_SIZE

    def _clear(self, off: int) -> None:
        """Zero a reserved slot whose filling failed: it goes to the kernel as a NOP, as a slot
        from get_sqe() would."""
        self.sqes[off:off + abi.SQE_SIZE] = ZERO_SQE

    def keep(self, obj: object) -> None:
        """Keep obj alive as long as the ring (iovecs, timespecs, buffers)."""
        self._refs.append(obj)

    def submit(self, wait_nr: int = 0) -> int:
        """Publish queued SQEs and enter the kernel; EINTR is returned as -1.

        The number still pending is recomputed from sq head/tail, so an
        interrupted call loses nothing; the caller simply calls again.
        """
        self._sq_tail.value = self._local_tail
        to_submit = self.pending()
        if to_submit == 0 and wait_nr == 0 and not self.deferred:
            return 0
        flags = abi.ENTER_GETEVENTS if wait_nr or self.deferred else 0
        try:
            return syscall.io_uring_enter(self.fd, to_submit, wait_nr, flags)
        except InterruptedError:
            return -1

    # -- completion -------------------------------------------------------
    def reap(self) -> list[tuple[int, int, int]]:
        """Return all available CQEs as (user_data, res, flags) and consume them."""
        head = self._cq_head.value
        tail = self._cq_tail.value
        out = []
        unpack = abi.CQE.unpack_from
        while head != tail:
            off = self._cqes_off + (head & self.cq_mask) * abi.CQE.size
            out.append(unpack(self.cq_mm, off))
            head = (head + 1) & 0xFFFFFFFF
        self._cq_head.value = head
        return out

    def ready(self) -> int:
        """CQEs the kernel has posted and nobody has reaped yet (reads the CQ ring's head and
        tail only, never a CQE)."""
        return (self._cq_tail.value - self._cq_head.value) & 0xFFFFFFFF

    def overflow(self) -> int:
        """Kernel count of CQEs dropped on overflow."""
        return self._cq_overflow.value

    # -- SQE builders -----------------------------------------------------
    def prep_uring_cmd(self, fd: int, cmd_op: int, user_data: int, cmd: bytes,
                       addr: int = 0, length: int = 0, cmd_flags: int = 0,
                       buf_index: int = 0, sqe_flags: int = 0) -> None:
        """Queue an IORING_OP_URING_CMD; `cmd` goes to sqe->cmd (byte 48); sqe_flags are
        IOSQE_* (e.g. IOSQE_ASYNC: issue from io-wq)."""
        if type(cmd) is bytes and len(cmd) <= CMD_ROOM:  # the whole slot in one go (cmd zero-padded)
            off = self._reserve()
            try:
                _pack_cmd_sqe(self.sqes, off, URING_CMD, sqe_flags, 0, fd, cmd_op, 0,
                              addr, length, cmd_flags, user_data, buf_index, 0, 0, cmd)
            except BaseException:
                self._clear(off)
                raise
            return
        off = self.get_sqe()
        abi.SQE_CMD_HEAD.pack_into(self.sqes, off, abi.Op.URING_CMD, sqe_flags, 0, fd, cmd_op, 0,
                                   addr, length, cmd_flags, user_data, buf_index, 0, 0)
        start = off + abi.SQE_CMD_OFFSET
        self.sqes[start:start + len(cmd)] = cmd

    def prep_rw(self, op: int, fd: int, addr: int, length: int, file_off: int,
                user_data: int, buf_index: int = 0) -> None:
        """Queue a read/write style op (READ_FIXED, WRITE_FIXED, READ, WRITE)."""
        off = self._reserve()
        try:
            _pack_sqe(self.sqes, off, op, 0, 0, fd, file_off, addr, length, 0,
                      user_data, buf_index, 0, 0)
        except BaseException:
            self._clear(off)
            raise

    def prep_poll(self, fd: int, events: int, user_data: int) -> None:
        """Queue a one-shot IORING_OP_POLL_ADD (events in sqe->poll32_events)."""
        off = self.get_sqe()
        abi.SQE_HEAD.pack_into(self.sqes, off, abi.Op.POLL_ADD, 0, 0, fd, 0, 0, 0, events,
                               user_data, 0, 0, 0)

    def prep_timeout(self, seconds: float, user_data: int) -> None:
        """Queue an IORING_OP_TIMEOUT that completes with -ETIME after `seconds`."""
        ts = abi.KernelTimespec(int(seconds), int((seconds % 1) * 1e9))
        self._timespecs.append(ts)  # read at submit time; a short history suffices
        off = self.get_sqe()
        abi.SQE_HEAD.pack_into(self.sqes, off, abi.Op.TIMEOUT, 0, 0, -1, 0,
                               ctypes.addressof(ts), 1, 0, user_data, 0, 0, 0)

    # -- registration -----------------------------------------------------
    def register_buffers(self, iovecs: list[tuple[int, int]]) -> None:
        """IORING_REGISTER_BUFFERS; (0, 0) entries are empty (sparse) slots."""
        arr = (abi.Iovec * len(iovecs))(*[abi.Iovec(b or None, n) for b, n in iovecs])
        syscall.io_uring_register(self.fd, abi.Register.BUFFERS, ctypes.addressof(arr),
                                  len(iovecs))

    def register_buffers_sparse(self, nr: int) -> None:
        """IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_SPARSE: nr empty slots."""
        rr = abi.RsrcRegister(nr=nr, flags=abi.RSRC_REGISTER_SPARSE)
        syscall.io_uring_register(self.fd, abi.Register.BUFFERS2, ctypes.addressof(rr),
                                  ctypes.sizeof(rr))

    def update_buffers(self, offset: int, iovecs: list[tuple[int, int]]) -> None:
        """IORING_REGISTER_BUFFERS_UPDATE: fill (or clear with (0,0)) slots."""
        arr = (abi.Iovec * len(iovecs))(*[abi.Iovec(b or None, n) for b, n in iovecs])
        up = abi.RsrcUpdate2(offset=offset, data=ctypes.addressof(arr), nr=len(iovecs))
        syscall.io_uring_register(self.fd, abi.Register.BUFFERS_UPDATE,
                                  ctypes.addressof(up), ctypes.sizeof(up))

    def register_kmbuf_ring(self, bgid: int, buf_size: int, nr_bufs: int) -> None:
        """IORING_REGISTER_KMBUF_RING (generation D): the kernel allocates nr_bufs buffers
        of buf_size bytes (page-aligned) for buffer group bgid; nr_bufs a power of two."""
        reg = abi.BufReg(ring_addr=buf_size, ring_entries=nr_bufs, bgid=bgid)
        syscall.io_uring_register(self.fd, abi.Register.KMBUF_RING, ctypes.addressof(reg), 1)

    def unregister_kmbuf_ring(self, bgid: int) -> None:
        """IORING_UNREGISTER_KMBUF_RING (generation D)."""
        reg = abi.BufReg(bgid=bgid)
        syscall.io_uring_register(self.fd, abi.Register.UNREGISTER_KMBUF_RING,
                                  ctypes.addressof(reg), 1)

    def map_kmbuf(self, bgid: int, length: int) -> mmap.mmap:
        """The buffers of kmbuf group bgid, buffer i at i * buf_size (generation D)."""
        return mmap.mmap(self.fd, length, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE,
                         offset=abi.OFF_KMBUF_RING | (bgid << abi.OFF_KMBUF_SHIFT))

    def close(self, *mappings: mmap.mmap) -> None:
        """Tear the ring down: unmap its SQ/CQ/SQE areas (and `mappings` of its fd, such as
        kmbuf buffers), then close the fd. Only then does the kernel run the ring's exit
        (cancel parked commands, free buffer groups): a live mapping keeps the file open."""
        if self.fd < 0:
            return
        for name in ("_sq_head", "_sq_tail", "_sq_array", "_cq_head", "_cq_tail", "_cq_overflow"):
            setattr(self, name, None)  # ctypes views pin their mmap
        for mm in (*mappings, self.sqes, self.sq_mm, self.cq_mm):
            with contextlib.suppress(BufferError, ValueError):
                mm.close()
        os.close(self.fd)
        self.fd = -1
