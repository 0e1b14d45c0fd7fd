"""Guest side of fuse-harness: a stdlib-only FUSE server and client checks.

Runs inside the test VM. Serves FUSE over /dev/fuse or io_uring (iovec,
bufpool, registered bufpool, zero-copy; bufring of the posted bufring series; kmbuf and
kmbuf-zero-copy of the posted kmbuf series)
and prints KTAP. Never imports harness/.
"""

import os

TRANSPORTS = ("legacy", "iovec", "bufpool", "bufpool-registered", "zero-copy", "bufring", "kmbuf",
              "kmbuf-zero-copy")
#: Transports whose READ/WRITE data moves with READ_FIXED/WRITE_FIXED (C and D).
ZERO_COPY = ("zero-copy", "kmbuf-zero-copy")


def time_scale() -> float:
    """FUSE_HARNESS_TIME_SCALE (the host's time scale: slow debug kernels), default 1."""
    return float(os.environ.get("FUSE_HARNESS_TIME_SCALE") or 1.0)
