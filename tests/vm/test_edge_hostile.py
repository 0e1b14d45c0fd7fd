"""A server that breaks its own buffers: the kernel fails that request cleanly (or serves it
through pinned pages of its own) and the connection keeps serving (guest/edge/hostile.py)."""

from __future__ import annotations

import pytest
from edge_helpers import run_edge, transports_for


@pytest.mark.parametrize("ring", transports_for("protected-buffers"))
def test_server_protects_its_own_buffers(vm, request, run_dir, kernel, ring):
    """H1: the header area PROT_NONE between a held READ's reply and its COMMIT, then the payload
    buffers PROT_NONE when a WRITE arrives, each the client's only request in the window (an
    O_DIRECT pread, a pwrite): that request fails with EIO/EFAULT inside the window (or, through
    pages the kernel pinned, is served intact), never a success for a reply never read, wrong
    bytes or a hang; a fresh read works once the memory is readable again."""
    run_edge(vm, request, run_dir, kernel, "protected-buffers", "H1", timeout=180, extra=f"--transport {ring}")


def test_ring_never_becomes_ready(vm, request, run_dir, kernel):
    """H5: INIT negotiated FUSE_OVER_IO_URING but no entry is ever registered: new requests
    wait for the ring (killable, nothing reaches /dev/fuse for them), SIGKILL ends a client,
    an abort releases the others and the mount unmounts; with kernel.io_uring_disabled=2
    io_uring_setup fails with EPERM and a server that leaves FUSE_OVER_IO_URING out of INIT is
    served over /dev/fuse."""
    run_edge(vm, request, run_dir, kernel, "never-ready", "H5", timeout=180)


@pytest.mark.parametrize("ring", transports_for("payload-lies"))
def test_reply_payload_sz_lies(vm, request, run_dir, kernel, ring):
    """H2: the first READ, READDIR, LISTXATTR, GETXATTR and STATFS reply each claim a
    payload_sz one page past the entry's buffer, then 0xffffffff: the client gets an error (or
    the right value), never wrong bytes or a hang, and every queue serves a fresh read after;
    a connection limited to 4 KiB per request (max_write 4096, max_pages 1) carries a 256 KiB
    write and read intact."""
    run_edge(vm, request, run_dir, kernel, "payload-lies", "H2", timeout=240, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("buffer-table"))
def test_buffer_table_tampered_in_flight(vm, request, run_dir, kernel, ring):
    """H7: with a GETXATTR held, the server replaces the fixed buffer the kernel reads its reply
    from (BUFFERS_UPDATE: a decoy for 7.3's pools; on generation D, which looks the headers slot
    up per request, the server moves its headers into the new buffer) on one mount and
    unregisters the whole table on another, committing after each: the client gets the right
    value or EIO/EFAULT, never the decoy's bytes; later requests never block; abort and umount
    work; no page stays pinned."""
    run_edge(vm, request, run_dir, kernel, "buffer-table", "H7", timeout=180, extra=f"--transport {ring}")
