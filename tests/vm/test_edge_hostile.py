"""A server that breaks its own buffers: the kernel fails that request cleanly (or serves it
through pinned pages of its own) and the connection keeps serving (guest/edge/hostile.py)."""

from __future__ import annotations

import pytest
from edge_helpers import RINGS_SERVED, run_edge


@pytest.mark.parametrize("ring", RINGS_SERVED)
def test_server_protects_its_own_buffers(vm, request, run_dir, kernel, ring):
    """H1: the header area PROT_NONE between a READ reply and its COMMIT, then the payload
    buffers PROT_NONE when a WRITE arrives: the client gets the right bytes or EIO/EFAULT,
    never wrong bytes or a hang; a fresh read works once the memory is readable again."""
    run_edge(vm, request, run_dir, kernel, "protected-buffers", "H1", timeout=180, extra=f"--transport {ring}")


def test_ring_never_becomes_ready(vm, request, run_dir, kernel):
    """H5: INIT negotiated FUSE_OVER_IO_URING but no entry is ever registered: new requests
    wait for the ring (killable, nothing reaches /dev/fuse for them), SIGKILL ends a client,
    an abort releases the others and the mount unmounts; with kernel.io_uring_disabled=2
    io_uring_setup fails with EPERM and a server that leaves FUSE_OVER_IO_URING out of INIT is
    served over /dev/fuse."""
    run_edge(vm, request, run_dir, kernel, "never-ready", "H5", timeout=180)
