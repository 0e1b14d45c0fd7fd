"""iovec: the 7.2 ring ABI, one header + one max_payload_sz buffer per entry."""

from __future__ import annotations

import mmap

from guest.transports.engine import Entry, RingEngine
from guest.uring.ring import addr_of


class IovecTransport(RingEngine):
    """REGISTER with iov = {header, 288}, {payload, max_payload_sz}."""

    name = "iovec"

    def alloc(self) -> None:
        size = len(self.entries) * self.payload_size
        self.payload = mmap.mmap(-1, size)
        self.payload_addr = addr_of(self.payload)

    def entry_iov(self, e: Entry) -> tuple[int, int]:
        return self.payload_addr + e.gid * self.payload_size, self.payload_size

    def payload_loc(self, e: Entry, offset: int) -> tuple[mmap.mmap, int]:
        return self.payload, e.gid * self.payload_size
