"""guest/edge pure parts: SQE and fuse_uring_cmd_req encoders for malformed commands."""

from __future__ import annotations

import struct

import pytest

from guest.edge import SCENARIOS, parser_cases_ok
from guest.edge import sqe as S
from guest.fuse import proto as P
from guest.uring import abi


def test_cmd_req_layout_matches_uapi_offsets():
    req = S.cmd_req(qid=3, flags=1, commit_id=0x1122, uaddr=0xABCD0000, length=4096, reserved=7)
    assert len(req) == 40
    assert struct.unpack_from("<Q", req, 0)[0] == 1
    assert struct.unpack_from("<Q", req, 8)[0] == 0x1122
    assert struct.unpack_from("<H", req, 16)[0] == 3
    assert req[18:24] == bytes(6)
    assert struct.unpack_from("<QII", req, 24) == (0xABCD0000, 4096, 7)
    assert req == P.URING_CMD_REQ["C"].pack(1, 0x1122, 3, bytes(6), 0xABCD0000, 4096, 7)


def test_register_zc_index_overlays_low_uaddr_bytes():
    req = S.register(0, zc_index=1)
    assert req[24:26] == b"\x01\x00" and req[26:40] == bytes(14)
    assert S.register(2)[24:] == bytes(16)
    assert S.cmd_req(uaddr=0x10000, zc_index=5)[24:32] == struct.pack("<Q", 0x10005)


def test_add_bufpool_malformed_fields():
    assert struct.unpack_from("<Q", S.add_bufpool(0, 0x1000, 8192, flags=1), 0)[0] == 1
    assert struct.unpack_from("<I", S.add_bufpool(0, 0x1000, 8192, reserved=1), 36)[0] == 1
    assert struct.unpack_from("<Q", S.add_bufpool(1, 0, 8192), 24)[0] == 0  # S5 uaddr=0


def test_commit_and_int_bit():
    req = S.commit(1, 0x20)
    assert struct.unpack_from("<QH", req, 8) == (0x20, 1)
    assert S.unique_with_int_bit(0x20) == 0x21
    assert S.out_header(0x21, -5) == P.OUT_HEADER.pack(16, -5, 0x21)


@pytest.mark.parametrize("pad1", [0, 1])
def test_uring_cmd_sqe_128(pad1):
    cmd = S.add_queue(2, flags=2)
    slot = S.uring_cmd_sqe(9, P.URING_CMD_ADD_QUEUE, 0xDEAD, cmd, addr=0x1000, length=2,
                           cmd_flags=abi.URING_CMD_FIXED, buf_index=3, pad1=pad1)
    assert len(slot) == 128
    assert slot[0] == abi.Op.URING_CMD
    assert struct.unpack_from("<iII", slot, 4) == (9, P.URING_CMD_ADD_QUEUE, pad1)
    assert struct.unpack_from("<QII", slot, 16) == (0x1000, 2, abi.URING_CMD_FIXED)
    assert struct.unpack_from("<QH", slot, 32) == (0xDEAD, 3)
    assert slot[48:88] == cmd and slot[88:] == bytes(40)


def test_uring_cmd_sqe_64_truncates_cmd():
    cmd = S.add_queue(1)
    slot = S.uring_cmd_sqe(3, P.URING_CMD_ADD_QUEUE, 1, cmd, size=S.SMALL_SQE_SIZE)
    assert len(slot) == 64 and slot[48:64] == cmd[:16]


def test_unknown_cmd_ops_are_unknown():
    known = {P.URING_CMD_REGISTER, P.URING_CMD_COMMIT_AND_FETCH, P.URING_CMD_ADD_QUEUE,
             P.URING_CMD_ADD_BUFPOOL}
    assert not known & set(S.UNKNOWN_CMD_OPS)


def test_scenarios_are_well_formed():
    assert "add-bufpool-flags" in SCENARIOS
    assert parser_cases_ok()
    for name, s in SCENARIOS.items():
        assert len(set(s.cases)) == len(s.cases), name
        assert all("#" not in c and " " not in c for c in s.cases), name
        assert 0 < s.budget <= 300, name


def test_register_bad_iov_cases_match_the_module():
    from guest.edge import SCENARIOS, register

    assert SCENARIOS["register-bad-iov"].cases == register.case_names()


def test_judge_a_client_outcome():
    import errno

    from guest.edge.clients import judge

    clean = (errno.EIO, errno.EFAULT)
    assert judge(None, "x", clean) == (False, "the client is still blocked")
    assert judge({"ok": True, "value": "x"}, "x", clean)[0]
    ok, why = judge({"ok": True, "value": "y" * 100}, "x", clean)
    assert not ok and "WRONG VALUE" in why and len(why) < 130
    assert judge({"ok": True, "value": "y"}, "x", clean, describe=lambda v: "THE DECOY")[1].endswith("THE DECOY")
    assert judge({"ok": False, "errno": errno.EFAULT}, "x", clean) == (True, "the client failed with EFAULT")
    assert not judge({"ok": False, "errno": errno.ENOENT}, "x", clean)[0]
    assert "killed: an oops?" in judge({"ok": False, "error": "killed"}, "x", clean)[1]


def test_a_client_verdict_names_a_blocked_client_and_judges_a_finished_one():
    """Client.verdict: judge() of the client now; a blocked one gets its wait and task state."""
    import errno
    from types import SimpleNamespace

    from guest.edge.clients import Client

    ctx = SimpleNamespace(pids=[], closers=[])
    c = Client(ctx, "gated", lambda: "x", cpu=None, gate=True)  # blocked until go()
    try:
        ok, why = c.verdict("x", (errno.EIO,), waited=" after 1 s")
        assert not ok and why.startswith("the client is still blocked after 1 s (state ")
        c.go()
        assert c.poll(30) is not None
        assert c.verdict("x", (errno.EIO,)) == (True, "the client succeeded with the right value")
        assert c.verdict("y", (errno.EIO,), lambda v: "THE DECOY") == (
            False, "the client succeeded WITH A WRONG VALUE: THE DECOY")
    finally:
        for close in ctx.closers:
            close()


def test_a_client_result_is_read_without_waiting_for_the_child_to_exit():
    """A client whose exit blocks (its close() of a file on the mount sends a FLUSH only the
    scenario can answer) has its result read as soon as it is written: poll() never waits for
    EOF, which would wait for the scenario itself. Here a grandchild that sleeps keeps the
    result pipe's write end open for 5 s after the client wrote its result."""
    import os
    import time

    from guest.edge.clients import Client
    from guest.edge.core import Ctx

    def fn() -> str:
        if os.fork() == 0:  # the grandchild: holds every inherited fd, then goes
            time.sleep(5)
            os._exit(0)
        return "ok"

    c = Client(Ctx("t", ["c"], 30.0), "slow-exit", fn, cpu=None)
    try:
        t0 = time.monotonic()
        out = None
        while out is None and time.monotonic() - t0 < 10:
            out = c.poll(0.1)
        assert out == {**out, "ok": True, "value": "ok"}
        assert time.monotonic() - t0 < 3
    finally:
        c.kill()


def test_kmbuf_commit_no_headers_is_registered_with_its_module_cases():
    from guest.edge import SCENARIOS, kmbuf_fetch

    s = SCENARIOS["kmbuf-commit-no-headers"]
    assert (s.module, s.func) == ("kmbuf_fetch", "commit_without_headers")
    assert s.cases == ("second_queued_at_commit", *kmbuf_fetch.AFTER_PROOF)
    assert s.catalog == "D: commit_fetch header lookup failure (v4 19/25)"


class _FakeClient:
    def __init__(self, pid: int, done: bool = False) -> None:
        self.pid, self._done, self.went = pid, done, False

    def go(self) -> None:
        self.went = True

    def done(self) -> bool:
        return self._done

    def poll(self, timeout: float = 0.0):  # noqa: ANN201
        return {"ok": True, "value": 1} if self._done else None

    def state(self) -> str:
        return "S"


def _proof_with(monkeypatch, held_qid: int | None, waiting: int, second_seen: bool = False,
                second_done: bool = False) -> tuple[str, list]:
    """kmbuf_fetch._proof on a stand-in server: (what it returns, the io_uring_register calls)."""
    from types import SimpleNamespace

    from guest.edge import kmbuf_fetch as KF
    from guest.edge.core import Ctx

    calls: list = []
    monkeypatch.setattr(KF.M, "minor_of", lambda mnt: 42)
    monkeypatch.setattr(KF.M, "waiting", lambda minor: waiting)
    monkeypatch.setattr(KF.syscall, "io_uring_register", lambda *a: calls.append(a))
    monkeypatch.setattr(KF, "kernel_stack", lambda pid: "wchan request_wait_answer")
    held = [SimpleNamespace(qid=held_qid, gid=0)] if held_qid is not None else []
    eng = SimpleNamespace(held=held, depth=1, infos={0: {"op": "LOOKUP", "unique": 2}},
                          log=[{"pid": 200, "op": "LOOKUP", "qid": 1}] if second_seen else [],
                          ring_of=lambda q: SimpleNamespace(fd=9))
    srv = SimpleNamespace(engine=eng, mnt="/mnt", pump=lambda *a, **k: True)
    c2 = _FakeClient(200, second_done)
    got = KF._proof(Ctx("kmbuf-commit-no-headers", [], 30.0), srv, _FakeClient(100), c2)
    assert c2.went == (held_qid == 0)  # the second client starts only once the first is held
    return got, calls


def test_kmbuf_commit_no_headers_proves_the_second_request_was_queued(monkeypatch):
    """Its path proof: the one entry of queue 0 held the first request, fusectl counted the
    second in flight and the server never saw it; only then are queue 0's buffers unregistered.
    Anything else is `not exercised`, and nothing is unregistered."""
    from guest.uring import abi

    assert _proof_with(monkeypatch, 0, 2) == ("", [(9, abi.Register.UNREGISTER_BUFFERS, 0, 0)])
    for args, what in (((None, 2), "never stayed in queue 0"), ((1, 2), "never stayed in queue 0"),
                       ((0, 1), "counts 1 request"), ((0, 2, True), "not queued"),
                       ((0, 2, False, True), "not queued")):
        got, calls = _proof_with(monkeypatch, *args)
        assert got.startswith("not exercised:") and what in got and calls == [], (args, got)


def test_expect_res_control_fails_unexercised_when_the_control_is_refused_too(capsys):
    """A bad command's errno counts only when the same command with the field fixed got past
    the check (control_ok); otherwise the case fails as not exercised, whatever its own res."""
    import errno

    from guest.edge.core import Ctx

    ctx = Ctx("t", ["a", "b", "c"], 30.0)
    assert ctx.expect_res_control("a", -errno.EINVAL, -errno.EINVAL, None, True, "R:", "ctl")
    assert not ctx.expect_res_control("b", -errno.EINVAL, -errno.EINVAL, -errno.EINVAL, False,
                                      "R:", "ctl")
    assert not ctx.expect_res_control("c", -errno.EFAULT, -errno.EINVAL, 0, True, "R:", "ctl")
    out = capsys.readouterr().out
    assert "b: not exercised: the control command (field fixed) was refused too: -EINVAL" in out
    assert "a: R: CQE res -EINVAL (expected -EINVAL); ctl: parked" in out


class _RingB:
    """A second ring (hashable, closable)."""

    def close(self) -> None:
        pass


class _V4Conn:
    """A stand-in connection that answers REGISTER by kmbuf v4's rules (forward-ported tree,
    fs/fuse/dev_uring.c): qid :1548, pin :309 (-EALREADY, kbuf.c:322), ZERO_COPY depth :328,
    ZERO_COPY without BUF_RING :380, flags differing from the queue's :1560; a refusal
    poisons (-EOPNOTSUPP afterwards). `refuse_zc` answers every ZERO_COPY REGISTER -EINVAL."""

    def __init__(self, tag: str, kmbuf: bool = True, refuse_zc: bool = False) -> None:
        self.tag, self.nr_queues, self.refuse_zc = tag, 2, refuse_zc
        self.groups = {"A": kmbuf}  # ring -> has a kmbuf group
        self.pinned: set = set()
        self.queues: dict = {}
        self.poisoned = False

    def cmd(self, op, req, addr=0, length=0, buf_index=0, timeout=0.0, ring=None):  # noqa: ANN001, ANN201, ARG002
        import errno

        from guest.transports.kmbuf import D_CMD
        _, _, qid, flags, depth, _ = D_CMD.unpack(req) if not addr else (0, 0, 0, 0, 0, b"")
        res = self._register(ring or "A", qid, bool(flags & 1), bool(flags & 2), depth, errno)
        self.poisoned = self.poisoned or res is not None
        return res

    def _register(self, ring, qid, buf_ring, zc, depth, errno):  # noqa: ANN001, ANN202
        if self.poisoned:
            return -errno.EOPNOTSUPP
        if qid >= self.nr_queues:
            return -errno.EINVAL
        if qid in self.queues:
            return None if self.queues[qid] == (buf_ring, zc) else -errno.EINVAL
        if buf_ring:
            if not self.groups.get(ring):
                return -errno.EINVAL
            if ring in self.pinned:
                return -errno.EALREADY
            if zc and (self.refuse_zc or not depth):
                return -errno.EINVAL
            self.pinned.add(ring)
        elif zc:
            return -errno.EINVAL
        self.queues[qid] = (buf_ring, zc)
        return None


def _kmbuf_validation(monkeypatch, capsys, refuse_zc: bool = False) -> dict:
    """kmbuf.validation over _V4Conn stand-ins: case -> its KTAP line and diagnostics."""
    from types import SimpleNamespace

    from guest.edge import SCENARIOS
    from guest.edge import kmbuf as K
    from guest.edge.core import Ctx

    monkeypatch.setattr(K, "skip_all_without_d", lambda ctx: True)
    monkeypatch.setattr(K, "Conn", lambda ctx, tag: _V4Conn(tag))
    monkeypatch.setattr(K, "Ring", lambda *a, **k: _RingB())
    monkeypatch.setattr(K, "sqe128_proof", lambda ctx, case, conn: ctx.result(case, True))

    def d_conn(ctx, tag, kmbuf=True, headers=True, zc_depth=0):  # noqa: ANN001, ANN202, ARG001
        conn = _V4Conn(tag, kmbuf, refuse_zc)
        conn.init = SimpleNamespace(max_payload_sz=4096)
        conn.get_ring = lambda: SimpleNamespace(keep=lambda obj: None)
        return conn
    monkeypatch.setattr(K, "_d_conn", d_conn)
    monkeypatch.setattr(K, "_d_ring", lambda ctx, conn, ring: conn.groups.update({ring: True})
                        or ring)
    cases = SCENARIOS["kmbuf-validation"].cases
    K.validation(Ctx("kmbuf-validation", list(cases), 30.0), None)
    out = capsys.readouterr().out
    return {c: [ln for ln in out.splitlines() if f"kmbuf-validation.{c}" in ln or f"# {c}:" in ln]
            for c in cases}


def test_kmbuf_validation_each_bad_register_is_judged_against_its_control(monkeypatch, capsys):
    """By v4's rules every case passes but unknown_init_flag_einval (v4 ignores unknown bits:
    known issue kmbuf-v4-unknown-init-flags-accepted); when the ZERO_COPY control is refused
    too, the two ZERO_COPY cases fail as not exercised instead of passing on any -EINVAL."""
    got = _kmbuf_validation(monkeypatch, capsys)
    for case, lines in got.items():
        want = "not ok" if case == "unknown_init_flag_einval" else "ok"
        assert any(ln.startswith(f"{want} ") for ln in lines), (case, lines)
    assert any("second ring with its own group, after queue 0: parked" in ln
               for ln in got["second_queue_same_ring_ealready"]), got
    got = _kmbuf_validation(monkeypatch, capsys, refuse_zc=True)
    for case in ("zc_depth_0_einval", "zc_without_buf_ring_einval"):
        assert any(ln.startswith("not ok ") for ln in got[case]), got[case]
        assert any("not exercised: the control command" in ln for ln in got[case]), got[case]
    assert any(ln.startswith("ok ") for ln in got["bad_qid_einval"])
