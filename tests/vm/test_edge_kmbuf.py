"""Generation D (the posted kmbuf series): its edge cases, each a guest scenario with a verdict.

Run on a target that promises kmbuf (`--target kmbuf-v4`); elsewhere every test skips with
the reason. What v4 does wrong is a known issue scoped to that target (known-issues.yaml),
with the guest command as reproducer. Scenarios that run over any transport with the features
they need (teardown, starvation S1, U7, ...) run over kmbuf from their own test files.
"""

from __future__ import annotations

import shlex

import pytest
from edge_helpers import PY, run_edge

from harness.config import REPO
from harness.plugin.results import ktap_subtests, record_subtests

KMBUF = pytest.mark.transport("kmbuf")
ZC = pytest.mark.transport("kmbuf-zero-copy")


@KMBUF
def test_register_validation(vm, request, run_dir, kernel):
    """Bad qid, unknown init flags, zero-copy with depth 0 or without BUF_RING, no kmbuf group,
    mixed flags on one queue, two queues on one ring, a ring without SQE128."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-validation", "D validation", timeout=240)


@KMBUF
def test_buffer_smaller_than_max_payload_refused(vm, request, run_dir, kernel):
    """A kmbuf ring with 4 KiB buffers under a 128 KiB max payload must be refused at REGISTER
    (a larger payload would spin in fuse_copy_one: see --provoke in the reproducer)."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-small-buffer", "D buf_size", timeout=180)


@KMBUF
def test_unregister_pinned_group_busy(vm, request, run_dir, kernel):
    """IORING_UNREGISTER_KMBUF_RING on a group a live queue pinned: -EBUSY, the queue serves."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-unregister-busy", "D pin", timeout=150)


@KMBUF
def test_rings_closed_with_requests_held(vm, request, run_dir, kernel):
    """Every ring closed while entries hold requests and buffers, then abort and umount:
    clients return, and the host scan of the kernel log finds nothing."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-ring-closed", "D T4", timeout=240)


@KMBUF
@pytest.mark.fresh_guest_after("a request stranded in an entry can keep the abort worker and its client stuck")
def test_bad_header_index_does_not_strand(vm, request, run_dir, kernel):
    """Entries whose sqe->buf_index points past the headers buffer: a request dispatched to
    them must fail at once, not hang until teardown."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-bad-header-index", "D headers", timeout=180)


@KMBUF
def test_async_commit(vm, request, run_dir, kernel):
    """COMMIT_AND_FETCH with IOSQE_ASYNC (issued from io-wq): clients complete, buffers
    recycle, no might-sleep or lockdep report in the kernel log."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-commit-async", "D async commit", timeout=240)


@KMBUF
@pytest.mark.fresh_guest_after("a fetch after a failed headers lookup may write through freed memory (v4 19/25)")
def test_commit_with_headers_unregistered_and_a_request_queued(vm, request, run_dir, kernel):
    """v4 19/25 fuse_uring_commit_fetch: with one entry per queue holding a request and a second
    request queued behind it, the server unregisters its fixed buffers and COMMITs: both clients
    get an answer or an error, no request reaches the server without a headers buffer, abort and
    umount work. On the debug profile the host's scan of the kernel log is the judge of the
    stale-iterator write (KASAN)."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-commit-no-headers", "D commit_fetch headers", timeout=150)


@KMBUF
def test_memlock_uncharged(vm, request, run_dir, kernel):
    """Register/unregister and register/close cycles of kmbuf rings as an unprivileged user
    under RLIMIT_MEMLOCK: every cycle is uncharged (a last ring at the limit still fits)."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-memlock", "D memlock", timeout=180)


@ZC
def test_zero_copy_short_read_zeroes_the_page_tail(vm, request, run_dir, kernel):
    """A zero-copy READ answered short at EOF leaves the rest of the client's page zeroed, as a
    copied READ does (the same client on kmbuf is the control): else bytes past the old EOF
    become visible once the file grows."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-zc-short-read", "D zc page_zeroing", timeout=240)


@ZC
def test_zero_copy_abort_with_write_in_flight(vm, request, run_dir, kernel):
    """Abort with a zero-copy WRITE held: the writer returns, and the entry's buffer slot no
    longer reaches the client's pages."""
    run_edge(vm, request, run_dir, kernel, "kmbuf-zc-teardown", "D zc teardown", timeout=180)


@ZC
def test_zero_copy_unprivileged_eperm(vm, request, run_dir):
    """A server without CAP_SYS_ADMIN asking for zero-copy (REGISTER with FUSE_URING_ZERO_COPY)
    is refused with EPERM, as 7.3's ADD_QUEUE does, and never becomes ready."""
    cmd = (f"cd {shlex.quote(str(REPO))} && {PY} -m guest check --transport kmbuf-zero-copy "
           f"--only zero_copy_unprivileged_eperm")
    result = vm.run(cmd, timeout=300)
    (run_dir / "guest-check-kmbuf-zero-copy-eperm.ktap").write_text(result.stdout + "\n# stderr:\n" + result.stderr)
    subtests = ktap_subtests(result.stdout)
    record_subtests(request, subtests)
    case = next((s for s in subtests if s["name"].endswith("zero_copy_unprivileged_eperm")), None)
    assert case is not None, f"the case did not run: {result.stdout[-1500:]} {result.stderr[-800:]}"
    why = [ln for ln in result.stdout.splitlines() if "zero_copy_unprivileged_eperm:" in ln]
    assert case["verdict"] == "PASS", f"{case['verdict']}: {' '.join(why)}"
