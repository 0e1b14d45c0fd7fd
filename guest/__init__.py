"""Guest side of fuse-harness: a stdlib-only FUSE server and client checks.

Runs inside the test VM. Serves FUSE over /dev/fuse or io_uring (iovec,
bufpool, registered bufpool, zero-copy) and prints KTAP. Never imports harness/.
"""

TRANSPORTS = ("legacy", "iovec", "bufpool", "bufpool-registered", "zero-copy")
