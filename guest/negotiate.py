"""FUSE_INIT negotiation: what the kernel offered and the reply we send."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from guest.fuse import proto as P

SERVER_MINOR = 46  # the newest protocol this server speaks (Linux 7.3)
WANTED = (P.ASYNC_READ | P.BIG_WRITES | P.PARALLEL_DIROPS | P.DO_READDIRPLUS
          | P.READDIRPLUS_AUTO | P.DIRECT_IO_ALLOW_MMAP)


@dataclass
class Init:
    """Outcome of INIT: kernel offer, negotiated values, derived ring sizes."""

    kernel_major: int
    kernel_minor: int
    kernel_flags: int
    kernel_flags2: int
    negotiated_minor: int
    reply_flags: int
    reply_flags2: int
    max_write: int
    max_pages: int
    max_payload_sz: int
    over_io_uring: bool

    @property
    def offered_uring(self) -> bool:
        """Kernel advertised FUSE_OVER_IO_URING (enable_uring was on)."""
        return bool(self.kernel_flags2 & (P.OVER_IO_URING >> 32))

    @property
    def offered_bufpool(self) -> bool:
        """Kernel advertised FUSE_HAS_IO_URING_BUFPOOL (generation C)."""
        return bool(self.kernel_flags2 & (P.HAS_IO_URING_BUFPOOL >> 32))

    def report(self) -> dict:
        """JSON-friendly view for the counters file."""
        d = asdict(self)
        d["offered"] = {"over_io_uring": self.offered_uring,
                        "has_bufpool": self.offered_bufpool,
                        "max_pages": bool(self.kernel_flags & P.MAX_PAGES)}
        return d


def max_pages_limit() -> int:
    """/proc/sys/fs/fuse/max_pages_limit (256 when unreadable)."""
    try:
        with open("/proc/sys/fs/fuse/max_pages_limit") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 256


def negotiate(init_in: bytes, want_uring: bool, max_write: int,
              max_pages: int | None, max_background: int = 64, extra: int = 0) -> tuple[bytes, Init]:
    """Build the fuse_init_out payload for a FUSE_INIT request's arg (max_background: the
    kernel's limit on background requests in flight, congestion at three quarters of it;
    extra: more FUSE_* INIT flags to ask for, such as FUSE_ASYNC_DIO)."""
    major, minor, max_readahead, flags, flags2 = P.INIT_IN.unpack(init_in)[:5]
    if major != P.KERNEL_MAJOR:
        raise ValueError(f"kernel speaks FUSE {major}.{minor}, need 7.x")
    if not flags & P.INIT_EXT:
        flags2 = 0
    offered = flags | (flags2 << 32)
    want = WANTED | P.INIT_EXT | extra
    if max_pages is not None:
        want |= P.MAX_PAGES
    if want_uring:
        want |= P.OVER_IO_URING
    reply = want & (offered | P.INIT_EXT)
    eff_pages = 32
    if reply & P.MAX_PAGES:
        eff_pages = min(max_pages_limit(), max(max_pages or 1, 1))
    eff_write = max(4096, max_write)
    neg_minor = min(minor, SERVER_MINOR)
    payload = P.INIT_OUT.pack(P.KERNEL_MAJOR, neg_minor, max_readahead,
                              reply & 0xFFFFFFFF, max_background, max(1, max_background * 3 // 4), max_write, 1,
                              max_pages or 0, 0, reply >> 32, 0, 0, bytes(22))
    info = Init(major, minor, flags, flags2, neg_minor, reply & 0xFFFFFFFF, reply >> 32,
                eff_write, eff_pages, P.max_payload_size(eff_write, eff_pages),
                bool(reply & P.OVER_IO_URING))
    return payload, info
