"""Path proofs of the edge cases (docs/path-proofs.md): a case whose manipulated request did not
take the path it names fails as `not exercised`, and its verdict is that request's own."""

from __future__ import annotations

import errno
import mmap
import os

from guest.edge import background, bgbatch, hostile
from guest.uring.ring import addr_of

EFAULT = -errno.EFAULT
UNREADABLE = (EFAULT, EFAULT)


def test_kernel_reads_sees_an_unreadable_page():
    m = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    a = addr_of(m)
    assert hostile.kernel_reads(a) == 16
    hostile.mprotect(a, 1, hostile.PROT_NONE)
    try:
        assert hostile.kernel_reads(a) == EFAULT
        assert hostile.kernel_reads(a + mmap.PAGESIZE) == 16
    finally:
        hostile.mprotect(a, 1, hostile.PROT_RW)
    assert hostile.kernel_reads(a) == 16


def _read(n: int, data: bytes, sentinel: bool = False) -> dict:
    return {"n": n, "sha": hostile._sha(data), "sentinel": sentinel}


def test_the_held_read_is_judged_by_its_own_outcome():
    ok, why = hostile._judge_read({"errno": errno.EFAULT}, None, UNREADABLE, "S")
    assert ok and "EFAULT inside the window" in why
    ok, why = hostile._judge_read(_read(4096, b"", sentinel=True), None, UNREADABLE, "S")
    assert not ok and "REPLY NEVER READ" in why
    ok, why = hostile._judge_read(_read(4096, b"x" * 4096), None, UNREADABLE, "S")
    assert not ok and "WRONG BYTES" in why
    ok, why = hostile._judge_read({"errno": errno.ENOTCONN}, None, UNREADABLE, "S")
    assert not ok


def test_the_header_case_is_not_exercised_without_a_fault_in_the_window():
    right = _read(hostile.PAGE, hostile.BODY[:hostile.PAGE])
    ok, why = hostile._judge_read({"errno": errno.EFAULT}, None, (16, EFAULT), "S")
    assert not ok and why.startswith("not exercised: the reply header was readable")
    ok, why = hostile._judge_read(None, right, UNREADABLE, "S")  # ended only after the window
    assert not ok and why.startswith("not exercised: the READ ended only after")
    ok, why = hostile._judge_read(right, None, UNREADABLE, "S")
    assert not ok and why.startswith("not exercised: the READ got the right bytes")
    ok, why = hostile._judge_read(None, None, UNREADABLE, "D")
    assert not ok and "still blocked (state D)" in why


def test_the_one_write_is_judged_by_its_own_outcome():
    ok, _ = hostile._judge_write({"errno": errno.EFAULT}, 0, None, hostile.WARM)
    assert ok
    ok, why = hostile._judge_write({"n": 4096}, 0, None, hostile.WARM)
    assert not ok and "WITHOUT THE SERVER" in why
    ok, why = hostile._judge_write(None, 0, {"n": 4096}, hostile.WARM + hostile.SOLO)
    assert not ok and why.startswith("not exercised")
    ok, why = hostile._judge_write(None, 1, {"n": 4096}, hostile.WARM + hostile.SOLO)
    assert ok and "pinned" in why
    ok, _ = hostile._judge_write(None, 1, {"n": 4096}, hostile.WARM)
    assert not ok


def _st(**kw) -> dict:
    st = {"held": 4, "late": 0, "waiting": 32, "done_early": False}
    st.update(kw)
    return st


def test_a_batch_must_go_over_max_background_to_count():
    assert bgbatch._proof(_st(), "WRITE", 5) == ""
    assert bgbatch._proof(_st(held=1), "WRITE", 5).startswith("not exercised: only 1")
    assert bgbatch._proof(_st(waiting=4), "WRITE", 5).startswith("not exercised: fusectl waiting 4")
    assert bgbatch._proof(_st(done_early=True), "WRITE", 5).startswith("not exercised")
    assert "more than max_background" in bgbatch._proof(_st(held=4, late=2), "WRITE", 5)


def test_a_read_fills_max_background_when_it_finds_three_held():
    assert background.MAX_BG == 4
    assert background.filled(0, 3) == 0  # none found 3 held
    assert background.filled(0, 4) == 1  # the fourth did
    assert background.filled(3, 4) == 1
    assert background.filled(2, 5) == 2  # the fourth and the fifth
    assert background.filled(4, 4) == 0  # nothing arrived


def test_parallel_reads_must_fill_max_background_to_count():
    ok = {"most": 4, "full": background.MIN_FULL}
    assert background.proof(ok, 5) == ""
    assert background.proof({**ok, "most": 5}, 5) == ""  # one per other queue is allowed
    short = background.MIN_FULL - 1
    assert background.proof({**ok, "full": short}, 5).startswith(f"not exercised: {short} READs filled")
    assert background.proof({"most": 3, "full": 0}, 5).startswith("not exercised: 0 READs filled")
    assert "more than max_background" in background.proof({**ok, "most": 6}, 5)
    assert "more than max_background" in background.proof({"most": 8, "full": 0}, 5)


def test_aio_batch_reads_each_page_at_its_offset(tmp_path):
    path = tmp_path / "aio"
    path.write_bytes(bgbatch.OLD)
    try:
        out = bgbatch.aio_batch(str(path))
    except OSError as exc:  # O_DIRECT refused by the file system under tmp_path (tmpfs)
        assert exc.errno == errno.EINVAL
        return
    assert out["submitted"] == bgbatch.PAGES and not out["bad"] and out["sha"] == bgbatch._sha(bgbatch.OLD)


def test_dirty_and_msync_writes_every_page(tmp_path):
    path = tmp_path / "wb"
    path.write_bytes(bgbatch.OLD)
    assert bgbatch.dirty_and_msync(str(path)) >= 0
    assert path.read_bytes() == bgbatch.NEW
    assert len({bgbatch.NEW[i:i + mmap.PAGESIZE] for i in range(0, len(bgbatch.NEW), mmap.PAGESIZE)}) == bgbatch.PAGES
    assert os.path.getsize(path) == bgbatch.PAGES * mmap.PAGESIZE


def test_a_claim_is_spent_only_on_a_reply_that_is_not_an_error():
    """payload-lies and U7: os.getxattr's first GETXATTR (128 bytes) is answered ERANGE; the lie
    must wait for the next one, and the engine records the reply that carried it."""
    from types import SimpleNamespace

    from guest.edge.served import manual_class

    class Base:
        payload_size = 8
        commits: list = []

        def commit(self, e, error, data, payload_sz=None):  # noqa: ANN001
            self.commits.append((error, data, payload_sz))

    eng = manual_class(Base)()
    eng.claim_payload, eng.lied, eng.int_bit_sent = {"GETXATTR": 1 << 16}, [], []
    eng.infos = {0: {"op": "GETXATTR", "unique": 6}, 1: {"op": "GETXATTR", "unique": 8}}
    eng.commit(SimpleNamespace(gid=0), -errno.ERANGE, b"")
    assert eng.lied == [] and "GETXATTR" in eng.claim_payload
    eng.commit(SimpleNamespace(gid=1), 0, b"v" * 20)
    assert eng.lied == [{"op": "GETXATTR", "unique": 8, "claim": 1 << 16, "sent": 8}]
    assert eng.commits[-1] == (0, b"v" * 8, 1 << 16) and not eng.claim_payload


# -- thread-exit (T5): the client's request met an entry of the exited thread -----------------

def test_thread_exit_passes_only_when_the_request_met_an_entry_of_the_exited_thread():
    from guest.edge import teardown as T

    failed = {"ok": False, "errno": errno.ECANCELED}
    ok, why = T.met_exited_entry(failed, [2], [], "data")
    assert ok and "met entry 2 of queue 0 (CQE -ECANCELED" in why and "ECANCELED" in why
    ok, why = T.met_exited_entry({"ok": False, "errno": errno.ENOTCONN}, [0], [], "data")
    assert ok  # an error is a clean end once the request met the entry
    ok, why = T.met_exited_entry({"ok": False, "errno": errno.EPERM}, [0], [], "data")
    assert not ok and "EPERM" in why
    # an error, or a success, without any entry of queue 0 meeting the request proves nothing
    for out in (failed, {"ok": True, "value": "data"}):
        ok, why = T.met_exited_entry(out, [], [], "data")
        assert not ok and why.startswith("not exercised: the client's request met no entry"), why


def test_thread_exit_judges_the_clients_own_outcome():
    from guest.edge import teardown as T

    read = [{"entry": 1, "op": "LOOKUP"}]
    ok, why = T.met_exited_entry({"ok": True, "value": "data"}, [], read, "data")
    assert ok and "reached the server on entry 1" in why and "the right bytes" in why
    ok, why = T.met_exited_entry({"ok": True, "value": "other"}, [], read, "data")
    assert not ok and "WRONG" in why
    ok, why = T.met_exited_entry({"ok": True, "value": "data"}, [3], [], "data")
    assert not ok and "SUCCEEDED WITHOUT THE SERVER" in why
    ok, why = T.met_exited_entry(None, [3], [], "data", "after 15 s, state S, fusectl waiting 1")
    assert not ok and why.startswith("the client is STRANDED (after 15 s") and "met entry 3" in why
    ok, why = T.met_exited_entry(None, [], [], "data")
    assert not ok and "STRANDED" in why and "not exercised" in why


# -- request-timeout-idle: queue 0 without entries, the read left to the timeout scan -----------

def test_idle_thread_exit_mount_is_drained_only_when_every_queue0_entry_ended():
    from guest.edge import timeout as TO

    canc = -errno.ECANCELED
    assert TO.drained([0, 1], {0: canc, 1: canc}, [], 2) == ""
    assert TO.drained([0, 1], {0: -errno.ENOTCONN, 1: -errno.ENOTCONN}, [], 0) == ""  # cancelled at the exit
    got = TO.drained([0, 1], {0: canc}, [1], 3)
    assert got.startswith("not exercised: entries [1] of queue 0 still took requests") and "3 stat" in got
    assert TO.drained([0, 1], {0: canc}, [], 1).startswith("not exercised: entries [1]")


class _Eng:
    """A stand-in engine: entries of two queues of depth 2; `kernel` decides what a request from
    CPU 0 does to queue 0's first live entry (as the kernel would, seen from the server)."""

    def __init__(self, kernel) -> None:  # noqa: ANN001
        from types import SimpleNamespace

        self.entries = [SimpleNamespace(gid=g, qid=g // 2, live=True) for g in range(4)]
        self.ent_errors: list = []
        self.kernel = kernel

    def request(self) -> dict:
        live = [e for e in self.entries if e.qid == 0 and e.live]
        return self.kernel(self, live[0] if live else None)


def _drain_with(monkeypatch, kernel) -> tuple[str, int]:  # noqa: ANN001
    """timeout._drain over _Eng(kernel): (its verdict, the number of clients it started)."""
    from types import SimpleNamespace

    from guest.edge import timeout as TO
    from guest.edge.core import Ctx

    eng = _Eng(kernel)
    started: list = []

    class FakeClient:
        def __init__(self, ctx, name, fn, cpu=0) -> None:  # noqa: ANN001
            assert cpu == 0
            started.append(name)
            self.out = eng.request()

        def done(self) -> bool:
            return self.out is not None

        def poll(self, timeout: float = 0.0):  # noqa: ANN201
            return self.out

    monkeypatch.setattr(TO, "Client", FakeClient)
    srv = SimpleNamespace(engine=eng, path=lambda n: f"/mnt/{n}", pump=lambda *a, **k: True)
    ctx = Ctx("request-timeout-idle", [], 30.0)
    return TO._drain(ctx, srv, "iovec"), len(started)


def test_idle_drain_uses_up_queue0_as_7_3_4_does(monkeypatch):
    def cancel(eng, e):  # noqa: ANN001, ANN202 - 7.3.4: the entry posts -ECANCELED, the client gets it
        e.live = False
        eng.ent_errors.append((e.gid, -errno.ECANCELED, 0.0))
        return {"ok": False, "errno": errno.ECANCELED}

    got, n = _drain_with(monkeypatch, cancel)
    assert got == "" and n == 2  # one client per entry of queue 0, none more


def test_idle_drain_is_not_exercised_when_the_entries_keep_serving(monkeypatch):
    def serve(eng, e):  # noqa: ANN001, ANN202 - delivered and answered: the entry lives on
        return {"ok": True, "value": 4800}

    got, n = _drain_with(monkeypatch, serve)
    assert got.startswith("not exercised: entries [0, 1] of queue 0 still took requests") and n == 3

    def stuck(eng, e):  # noqa: ANN001, ANN202 - the request never ends: stop at once
        return None

    got, n = _drain_with(monkeypatch, stuck)
    assert got.startswith("not exercised") and n == 1


def _idle_read(errno_: int | None, span: float) -> dict:
    out = {"ok": errno_ is None, "t0": 10.0, "t1": 10.0 + span}
    return {**out, "value": "x"} if errno_ is None else {**out, "errno": errno_}


def test_an_idle_read_passes_only_when_the_timeout_scan_ended_it():
    from guest.edge import timeout as TO

    blocked = (False, 1)
    ok, why = TO.idle_read_verdict(_idle_read(errno.ECONNABORTED, 29.5), blocked, 40.0, "")
    assert ok and "blocked with fusectl waiting 1" in why and "-ECONNABORTED after 29.5 s" in why
    assert TO.idle_read_verdict(_idle_read(errno.ENOTCONN, 16.0), blocked, 40.0, "")[0]
    for out in (None, _idle_read(None, 20.0), _idle_read(errno.EIO, 20.0), _idle_read(errno.ECONNABORTED, 45.0)):
        assert not TO.idle_read_verdict(out, blocked, 40.0, "")[0], out


def test_an_idle_read_is_not_exercised_unless_it_waited_in_the_kernel_for_the_scan():
    from guest.edge import timeout as TO

    late = _idle_read(errno.ECONNABORTED, 29.5)
    ok, why = TO.idle_read_verdict(_idle_read(errno.ECANCELED, 0.0), (True, 0), 40.0, "")
    assert not ok and why.startswith("not exercised: the read had ended 3 s in")
    ok, why = TO.idle_read_verdict(late, (False, 0), 40.0, "")
    assert not ok and why.startswith("not exercised: fusectl waiting 0")
    ok, why = TO.idle_read_verdict(_idle_read(errno.ECONNABORTED, 8.0), (False, 1), 40.0, "")
    assert not ok and why.startswith("not exercised: ended before its request could expire")
    ok, why = TO.idle_read_verdict(late, (False, 1), 40.0, "not exercised: entries [1] of queue 0 ...")
    assert not ok and why.startswith("not exercised: entries [1]") and "-ECONNABORTED after 29.5 s" in why


# -- starve-hol (S3): a no-payload request behind a starved one ------------------------------

def test_starve_hol_cases_are_the_modules():
    from guest.edge import SCENARIOS, starve

    assert SCENARIOS["starve-hol"].cases == starve.HOL_CASES


def test_starve_hol_setup_needs_every_entry_held_and_both_requests_queued():
    from guest.edge import starve as S

    full = ["LOOKUP", "FSYNC", "FSYNC"]
    assert S.hol_setup(full, 3, 5, []) == ""
    for args, what in (((["FSYNC", "LOOKUP"], 3, 5, []), "held ['FSYNC', 'LOOKUP']"),
                       ((full, 4, 5, []), "depth 4"),
                       ((full, 3, 5, ["R3"]), "R3 reached the server"),
                       ((full, 3, 4, []), "fusectl waiting 4"),
                       ((full, 3, None, []), "fusectl waiting None")):
        got = S.hol_setup(*args)
        assert got.startswith("not exercised: ") and what in got, (args, got)


def _hol(r2_at: float | None, r3_at: float | None, r2_commit: float | None = 3.0) -> dict:
    return {"f_commit": 1.0, "r1_commit": 2.0, "r2_commit": r2_commit, "r2_at": r2_at, "r3_at": r3_at}


def test_starve_hol_head_of_line_is_released_by_the_buffers_return():
    from guest.edge import starve as S

    ent = {"r3": 1, "f": 2}
    ok, why = S.hol_verdict(_hol(2.01, 3.002), ent, 5.0)  # 7.3.4: R2's entry takes R3 at its commit
    assert ok and why.startswith("head-of-line wait: R3 stayed queued 1.00 s after R1's commit with F's entry 2 free")
    ok, why = S.hol_verdict(_hol(2.01, 1.01), {"r3": 2, "f": 2}, 5.0)  # the freed entry took it at once
    assert ok and why.startswith("no head-of-line wait") and "(the one F freed)" in why
    assert S.hol_verdict(_hol(2.01, 2.5), ent, 5.0)[0]  # while R2 was held
    ok, why = S.hol_verdict(_hol(2.01, None), ent, 5.0)
    assert not ok and "NOT DELIVERED 5 s after R2's commit" in why
    ok, why = S.hol_verdict(_hol(2.01, 9.5), ent, 5.0)
    assert not ok and "delivered only 6.5 s" in why
    ok, why = S.hol_verdict(_hol(None, None, None), ent, 5.0)
    assert not ok and "R2 was never delivered" in why
    ok, why = S.hol_verdict(_hol(1.5, 3.01), ent, 5.0)
    assert not ok and why.startswith("not exercised: R2 was delivered before R1's commit")
