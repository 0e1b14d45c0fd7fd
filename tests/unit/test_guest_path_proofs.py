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
