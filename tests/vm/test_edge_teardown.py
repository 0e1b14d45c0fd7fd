"""Teardown with requests in flight: clients get ENOTCONN/ECONNABORTED, never hang.

The destructive P2 test (a bad REGISTER on a serving connection) runs last and always
recovers with a fusectl abort.
"""

from __future__ import annotations

import pytest
from edge_helpers import run_edge, transports_for

from guest.edge import IDLE_RINGS


@pytest.mark.parametrize("ring", transports_for("umount-inflight"))
def test_umount_with_request_in_flight(vm, request, run_dir, kernel, ring):
    """T1: umount -f while the server holds a READ (over zero-copy: its pages in the entry's
    buffer slot, else 'not exercised'): idle entries -ENOTCONN, the client fails
    ENOTCONN/ECONNABORTED, the late COMMIT gets -ENOTCONN."""
    run_edge(vm, request, run_dir, kernel, "umount-inflight", "T1", timeout=240, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("abort-fusectl"))
def test_abort_via_fusectl(vm, request, run_dir, kernel, ring):
    """T2: fusectl abort while a READ is held: same observations as T1, later ops ENOTCONN."""
    run_edge(vm, request, run_dir, kernel, "abort-fusectl", "T2", timeout=240, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("kill-server"))
def test_sigkill_server_mid_request(vm, request, run_dir, kernel, ring):
    """T3: SIGKILL of the server holding a request: the client gets ENOTCONN/ECONNABORTED."""
    run_edge(vm, request, run_dir, kernel, "kill-server", "T3", timeout=240, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("ring-closed"))
def test_ring_fd_closed(vm, request, run_dir, kernel, ring):
    """T4: ring fd closed, /dev/fuse kept: blocked clients stay killable, abort releases them."""
    run_edge(vm, request, run_dir, kernel, "ring-closed", "T4", timeout=240, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("thread-exit"))
def test_submitting_thread_exits(vm, request, run_dir, kernel, ring):
    """T5: the thread that submitted the entries exits, the ring stays open: the next
    request, from CPU 0, meets one of queue 0's entries (its CQE -ECANCELED, or the request at
    the server, else 'not exercised') and its client gets an error (or, if served, the file),
    never a hang."""
    run_edge(vm, request, run_dir, kernel, "thread-exit", "T5", timeout=180, extra=f"--transport {ring}")


@pytest.mark.parametrize("ring", transports_for("owner-exits"))
def test_ring_owner_exits_holding_requests(vm, request, run_dir, kernel, ring):
    """T6: the thread that made the ring exits with a READ held in every entry and more READs
    queued. A plain ring: another thread commits and every client returns with its bytes. A
    SINGLE_ISSUER|DEFER_TASKRUN ring: nobody else may submit, so the server closes its rings
    and aborts; every client returns. fusectl's `waiting` comes back to 0 in both."""
    run_edge(vm, request, run_dir, kernel, "owner-exits", "T6", timeout=240, extra=f"--transport {ring}")


@pytest.mark.long(25)
@pytest.mark.parametrize("ring", transports_for("teardown-load"))
def test_teardown_under_load(vm, request, run_dir, kernel, ring):
    """T8: 20 rounds of clients writing and reading on every queue, each round torn down by
    fusectl abort, umount -f, umount -l (still served, then abort) or SIGKILL of the server,
    in turn: every client returns within 15 s with a teardown error; then 20 clients
    SIGKILLed mid-I/O at queue depth 1 leave the entry serving and `waiting` at 0."""
    run_edge(vm, request, run_dir, kernel, "teardown-load", "T8", timeout=400,
             extra=f"--transport {ring} --iterations 20")


@pytest.mark.parametrize("ring", transports_for("register-burst"))
def test_first_registers_from_one_thread_per_queue(vm, request, run_dir, kernel, ring):
    """T8: 20 mounts, each with one thread and io_uring per queue released together right
    after INIT (libfuse's start-up), one reading client per queue racing them: every REGISTER
    is taken and every queue's ring serves; on every other mount fusectl abort races the burst
    and every thread and client returns; umount leaves no connection behind."""
    run_edge(vm, request, run_dir, kernel, "register-burst", "T8 registration", timeout=400,
             extra=f"--transport {ring} --iterations 20")


@pytest.mark.parametrize("ring", transports_for("mount-loop"))
def test_mount_umount_loop(vm, request, run_dir, kernel, ring):
    """20 x (mount, serve a read, umount, every entry -ENOTCONN); no fuse connection leaks."""
    run_edge(vm, request, run_dir, kernel, "mount-loop", "T1 loop", timeout=600,
             extra=f"--transport {ring} --iterations 20")


@pytest.mark.long(30)
def test_request_timeout_aborts_a_stuck_server(vm, request, run_dir, kernel):
    """T7: under fs.fuse.default_request_timeout=15, one mount per ring transport of the kernel
    (iovec, bufpool, registered pool, zero-copy; kmbuf and kmbuf-zero-copy on the posted
    series) holds a READ and a WRITE unanswered: the kernel's timeout scan must fail both
    clients with ECONNABORTED/ENOTCONN between 15 and 30 s after they started; a COMMIT of
    the held requests then gets -ENOTCONN; a zero-copy slot no longer reaches the client's
    pages; umount works. All mounts wait for the same scan (about 30 s in all)."""
    run_edge(vm, request, run_dir, kernel, "request-timeout", "T7", timeout=300)


@pytest.mark.long(50)
def test_request_timeout_with_idle_entries_cancelled(vm, request, run_dir, kernel):
    """T7 (idle entries): under a 15 s request timeout, for every ring transport the target
    promises (guest.edge.IDLE_RINGS, one case set each: iovec_thread_exit_client_ends_in_time,
    ...), a mount whose registering thread exited (stat clients then use up queue 0's entries:
    each posts its final CQE) and one whose rings were closed (/dev/fuse kept): a read from
    CPU 0 on each, still blocked 3 s in with fusectl `waiting` >= 1 (else 'not exercised'),
    ends with ECONNABORTED/ENOTCONN from the timeout scan 15 to 30 s (plus a margin) after it
    started, and every mount unmounts. All mounts wait for the same scan (about 30 s in all)."""
    rings = [t for t in IDLE_RINGS if t in kernel.promises()]
    if not rings:
        pytest.skip(f"target {kernel.target.name} promises no ring transport")
    run_edge(vm, request, run_dir, kernel, "request-timeout-idle", "T7", timeout=300,
             extra=f"--transports {','.join(rings)}")


@pytest.mark.parametrize("ring", transports_for("register-after-ready"))
def test_bad_register_after_ready(vm, request, run_dir, kernel, ring):
    """P2: one bad REGISTER on a serving connection must not strand later requests
    (7.3.4: commits fail -EOPNOTSUPP, clients hang until abort; known issue). Runs last."""
    run_edge(vm, request, run_dir, kernel, "register-after-ready", "P2", timeout=240, extra=f"--transport {ring}")
