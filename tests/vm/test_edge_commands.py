"""Command-level edge cases: each malformed or misordered uring command gets the exact errno.

One guest scenario per test (`python3 -m guest edge NAME`, guest/edge/); catalog ids from
fuse-uring-abi.md sections 7 and 10. Tests that need the 7.3 ADD_QUEUE/ADD_BUFPOOL ABI carry
`transport("bufpool")` and skip (with the reason) on targets that do not promise it.
"""

from __future__ import annotations

import pytest
from edge_helpers import run_edge, transports_for


def test_uring_cmd_without_sqe128_einval(vm, request, run_dir, kernel):
    """G1: a ring without IORING_SETUP_SQE128 must get -EINVAL and leave the connection usable."""
    run_edge(vm, request, run_dir, kernel, "no-sqe128", "G1", timeout=120)


def test_uring_cmd_before_mount_eperm(vm, request, run_dir, kernel):
    """G2: a uring command on an unmounted /dev/fuse fd must complete -EPERM."""
    run_edge(vm, request, run_dir, kernel, "before-mount", "G2", timeout=90)


def test_uring_cmd_before_init_reply_eagain(vm, request, run_dir, kernel):
    """G3: before the INIT reply a uring command must complete -EAGAIN (retryable)."""
    run_edge(vm, request, run_dir, kernel, "before-init", "G3", timeout=120)


def test_unknown_cmd_op_einval(vm, request, run_dir, kernel):
    """G7: unknown cmd_op values must complete -EINVAL without disabling io-uring."""
    run_edge(vm, request, run_dir, kernel, "unknown-cmd", "G7", timeout=120)


@pytest.mark.transport("bufpool")
def test_add_queue_errors(vm, request, run_dir, kernel):
    """Q1/Q2: bad qid or flag -> -EINVAL; Q4: an existing queue -> -EEXIST."""
    run_edge(vm, request, run_dir, kernel, "add-queue-errors", "Q1 Q2 Q4", timeout=120)


@pytest.mark.transport("zero-copy")
def test_add_queue_zero_copy_unprivileged_eperm(vm, request, run_dir, kernel):
    """Q3: ADD_QUEUE with FUSE_URING_ZERO_COPY without CAP_SYS_ADMIN must be -EPERM."""
    run_edge(vm, request, run_dir, kernel, "add-queue-zc-unpriv", "Q3", timeout=120)


@pytest.mark.transport("bufpool")
def test_add_bufpool_rejects_flags(vm, request, run_dir, kernel):
    """B1: ADD_BUFPOOL with flags=1 must complete -EINVAL and leave nothing behind.

    Fast on purpose (a bisect self-test depends on this node id)."""
    run_edge(vm, request, run_dir, kernel, "add-bufpool-flags", "B1", timeout=90)


@pytest.mark.transport("bufpool")
def test_add_bufpool_argument_errors(vm, request, run_dir, kernel):
    """B2 reserved, B3 no queue, B4 pool too small, B5 mode already set -> -EINVAL."""
    run_edge(vm, request, run_dir, kernel, "add-bufpool-errors", "B2 B3 B4 B5", timeout=120)


@pytest.mark.parametrize("ring", transports_for("register-bad-qid"))
def test_register_bad_qid_falls_back_to_devfuse(vm, request, run_dir, kernel, ring):
    """R1/P1: REGISTER qid >= nr_queues -> -EINVAL; later commands -EOPNOTSUPP; file
    operations still work over /dev/fuse."""
    run_edge(vm, request, run_dir, kernel, "register-bad-qid", "R1 P1", timeout=180, extra=f"--transport {ring}")


def test_register_bad_iovec_einval_and_poisons(vm, request, run_dir, kernel):
    """R2 one iovec, R3 unreadable iovec array (-EFAULT), R4 negative length, R6 short
    header, R9 short payload -> -EINVAL, and each failure poisons its connection (7.1)."""
    run_edge(vm, request, run_dir, kernel, "register-bad-iov", "R2 R3 R4 R6 R9", timeout=180)


@pytest.mark.transport("bufpool")
def test_register_bad_fields_einval(vm, request, run_dir, kernel):
    """R5: zero-copy slot on a plain queue, R7: payload iovec on a bufpool queue -> -EINVAL."""
    run_edge(vm, request, run_dir, kernel, "register-bad-fields", "R5 R7", timeout=150)


@pytest.mark.parametrize("ring", transports_for("commit-errors"))
def test_commit_errors_keep_request_pending(vm, request, run_dir, kernel, ring):
    """C1 -EINVAL, C5 -ENOENT; the request stays pending and a corrected commit completes it."""
    run_edge(vm, request, run_dir, kernel, "commit-errors", "C1 C5", timeout=240, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("reply-int-bit"))
def test_reply_unique_int_bit_no_warn(vm, request, run_dir, kernel, ring):
    """E4/W1: a reply whose unique has the interrupt bit must not reach a WARN from
    userspace. The host's dmesg scan is the judge (7.3.4: WARN_ON_ONCE(oh->unique &
    FUSE_INT_REQ_BIT) in the commit path; listed in known-issues.yaml)."""
    run_edge(vm, request, run_dir, kernel, "reply-int-bit", "E4 W1", timeout=180, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("notify-retrieve"))
def test_notify_retrieve_over_ring(vm, request, run_dir, kernel, ring):
    """W3: NOTIFY_RETRIEVE reaches the server as a NOTIFY_REPLY ring request with the cached
    data; W2: notify_unique 0 must not reach a WARN from userspace (7.2/7.3: WARN_ON in
    fuse_uring_copy_to_ring; listed in known-issues.yaml)."""
    run_edge(vm, request, run_dir, kernel, "notify-retrieve", "W3 W2", timeout=180, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("oversize-xattr"))
def test_oversize_xattr_payload(vm, request, run_dir, kernel, ring):
    """U7: a 64 KiB xattr value or reply through an 8 KiB ring payload (max_pages=1) gets the
    error /dev/fuse gives, never an oops or a hang, and the connection keeps serving (7.2: BUG
    in fuse_copy_fill; kmbuf v4: the kernel-address copy loop spins, a fresh guest follows)."""
    run_edge(vm, request, run_dir, kernel, "oversize-xattr", "U7", timeout=90, extra=f"--transport {ring}")
