"""Generation B (bufring v2 10/14, target bufring-v2): its edge cases, each a guest scenario with
a verdict. Elsewhere every test skips with the reason. The scenarios that run over any
transport with the features they need (teardown with buffers held T1-T5 and P2, S1, U7, ...)
run over bufring from their own test files (edge_helpers.transports_for). What 10/14 does
wrong is a known issue scoped to bufring-v2 (known-issues.yaml).
"""

from __future__ import annotations

import pytest
from edge_helpers import run_edge

BUFRING = pytest.mark.transport("bufring")


@BUFRING
def test_register_validation(vm, request, run_dir, kernel):
    """Each bad first REGISTER of a queue (unknown flag bit, queue_depth 0, buf_size 0, headers
    one byte short, buf_size below max_payload_sz, payload below one buffer, buf_index >=
    queue_depth, 65536 buffers, mixed flags in both orders) gets -EINVAL on a fresh mount; the
    boundary values (exact headers, buf_index depth-1, 65535 buffers) are accepted."""
    run_edge(vm, request, run_dir, kernel, "bufring-validation", "B REGISTER", timeout=400)


@BUFRING
def test_enobufs_starvation_all_complete(vm, request, run_dir, kernel):
    """1 buffer / 2 entries, 2 / 8, and payload requests mixed with fsyncs, replies delayed
    100 ms: every request completes with its data, none fails ENOBUFS, requests were queued for
    a buffer (counter waited >= 1, never more buffers held than exist); each wait is printed."""
    run_edge(vm, request, run_dir, kernel, "bufring-starve", "B ENOBUFS", timeout=450)


@BUFRING
def test_idle_entry_woken_when_a_buffer_frees(vm, request, run_dir, kernel):
    """PORT-NOTES D4: a payload request queued while an entry is idle and the buffer has just
    been recycled (by a commit whose next request had no payload) must be delivered without
    waiting for another commit; the wait is measured either way."""
    run_edge(vm, request, run_dir, kernel, "bufring-idle-entry", "B D4", timeout=240)


@BUFRING
@pytest.mark.fresh_guest_after("by reading 10/14, a payload area at address 0 reaches BUG_ON in fuse_copy_fill")
def test_null_payload_area_crash_probe(vm, request, run_dir, kernel):
    """PORT-NOTES D3: a queue whose payload area starts at 0 must be refused or its requests
    failed (unpatched 7.2: -EFAULT), never a kernel BUG. Runs last (tests/conftest.py: crash
    probes go to the end of the session), the guest is replaced after it."""
    run_edge(vm, request, run_dir, kernel, "bufring-null-payload", "B D3", timeout=150)


test_null_payload_area_crash_probe.crash_probe = True
