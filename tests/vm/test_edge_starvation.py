"""Pool starvation: with fewer buffers than entries every request still completes, intact.

The guest prints each request's delivery gap (head-of-line waits) as KTAP diagnostics,
kept in edge-<scenario>.ktap in the run dir.
"""

from __future__ import annotations

import pytest
from edge_helpers import run_edge, transports_for


@pytest.mark.parametrize("ring", transports_for("starve-one-buffer"))
def test_one_buffer_many_entries_all_complete(vm, request, run_dir, kernel, ring):
    """S1: 1 payload buffer (a 7.3 pool's, a bufring's or a kmbuf ring's), 4 entries, 4 readers
    pinned to one queue: the second request waits for the buffer, is handed to the committing
    entry, every read returns its data and no client sees ENOBUFS; waits are printed."""
    run_edge(vm, request, run_dir, kernel, "starve-one-buffer", "S1", timeout=300, extra=f"--transport {ring}")


@pytest.mark.transport("bufpool")
def test_head_of_line_all_complete(vm, request, run_dir, kernel):
    """S3: 3 entries, 1 buffer: a no-payload request (R3's FSYNC) queued behind a payload
    request starved of the buffer (R2's LOOKUP) reaches the server at the latest 5 s after
    R2's commit returns the buffer (its head-of-line wait is measured), and every request
    completes with its own result. Not exercised unless the three entries were held and
    fusectl counted R2 and R3 queued in the kernel, R2 first."""
    run_edge(vm, request, run_dir, kernel, "starve-hol", "S3", timeout=360)


@pytest.mark.transport("bufpool")
def test_bufpool_uaddr_zero_rejected(vm, request, run_dir, kernel):
    """S5: ADD_BUFPOOL with uaddr=0 must be refused; 7.3.4 accepts it, the first request
    fails, its buffer leaks and later requests starve until abort (known issue)."""
    run_edge(vm, request, run_dir, kernel, "bufpool-uaddr-zero", "S5", timeout=240)


@pytest.mark.parametrize("ring", transports_for("background"))
def test_background_requests_in_parallel(vm, request, run_dir, kernel, ring):
    """BG: max_background 4. Two batches of 32 submitted once (an msync of 32 dirty shared pages,
    one forced background WRITE each; one io_submit of 32 O_DIRECT reads) go over the limit (the
    server holds 4, fusectl `waiting` shows the rest kept back) and all complete once the server
    answers. Then, with 16 KiB requests, 8 entries and 8 payload buffers a queue, and a server
    that answers each READ after 20 ms: a 2 MiB buffered sequential read (readahead, reads the
    right data) and 128 fio libaio O_DIRECT 4 KiB reads at iodepth 32 (all done) each bring the
    server to 4 READs outstanding at once, with at least 8 READs each filling that limit (else
    "not exercised"), never more than 4 + queues - 1, and never leave the server without a READ
    for more than 2 s while the client waits."""
    run_edge(vm, request, run_dir, kernel, "background", "BG", timeout=400, extra=f"--transport {ring}")
