"""Guest side of fuse-harness: a stdlib-only FUSE server and client checks.

Runs inside the test VM. Serves FUSE over /dev/fuse or io_uring (iovec,
bufpool, registered bufpool, zero-copy; bufring of the posted bufring series; kmbuf and
kmbuf-zero-copy of the posted kmbuf series)
and prints KTAP. Never imports harness/.
"""

import os

# The transport names and the zero-copy ones, from the one table of transport features.
from guest.transports.features import TRANSPORTS, ZERO_COPY

__all__ = ["TRANSPORTS", "ZERO_COPY", "time_scale"]


def time_scale() -> float:
    """FUSE_HARNESS_TIME_SCALE (the host's time scale: slow debug kernels), default 1."""
    return float(os.environ.get("FUSE_HARNESS_TIME_SCALE") or 1.0)
