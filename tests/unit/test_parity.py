"""Transport parity, the pure parts: generator, faults, normalization, shrinking
(guest/parity/), and the client and file system on the host's own file system."""

from __future__ import annotations

import errno
import os

import pytest

from guest.edge import SCENARIOS
from guest.parity import gen
from guest.parity.faults import FaultPlan, corrupt
from guest.parity.gen import CONFIGS, Config, config_of, generate, parse_seeds
from guest.parity.oracle import divergence_class, first_divergence, normalize, shrink, verdict


def test_same_seed_same_calls_other_seed_other_calls():
    assert generate(7, 30) == generate(7, 30)
    assert generate(7, 30) != generate(8, 30)
    assert [c["i"] for c in generate(5, 24)] == list(range(24))


def test_every_op_and_every_corruption_once_per_sequence():
    for seed in range(30):
        calls = generate(seed, 24)
        assert len(calls) == 24
        assert set(gen.OPS) <= {c["op"] for c in calls}, seed
        kinds = {c["fault"]["kind"] for c in calls if c["fault"]}
        assert set(gen.HEADER_KINDS + gen.PAYLOAD_KINDS) <= kinds, seed


def _sure_errno_calls(calls):
    return [c for c in calls if c["op"] == "statfs" and c["fault"] and c["fault"]["kind"] == "errno"]


def test_every_sequence_with_probes_injects_an_errno_where_it_fires():
    """The random errnos often sit on a request that is never sent (an unlink whose LOOKUP
    fails, an oversize setxattr): a plain statfs always carries one (STATFS is always sent)."""
    for seed in (*gen.default_seeds(), *range(60)):
        for n in (12, 13, 17, 18, 24, 30):
            calls = generate(seed, n)
            assert len(calls) == n
            assert _sure_errno_calls(calls), (seed, n)
            f = _sure_errno_calls(calls)[0]["fault"]
            assert f["req"] == "STATFS" and f["errno"] in gen.ERRNOS
    assert not [c for c in generate(1, 11) if c["fault"] and c["fault"]["kind"] != "errno"]


def test_the_errno_probe_changes_no_call_of_the_sequence():
    """Replays name call indices: the probe only adds a fault to a call already there."""
    calls = generate(3, 24)
    assert calls[5]["op"] == "setxattr" and calls[5]["size"] == 65536  # the 7.3 oversize finding
    assert [c["op"] for c in calls].count("statfs") == 5 and calls[16]["fault"]["kind"] == "unique_wrong"


def test_an_injected_errno_that_fired_is_compared_as_injected_and_can_fail():
    call = {"i": 0, "op": "statfs", "fault": {"req": "STATFS", "kind": "errno", "errno": 5}}
    rec = [{"kind": "errno", "req": "STATFS"}]
    ref = normalize({"err": "EIO"}, rec, legacy=True)
    assert divergence_class(call, ref, None) == "injected"  # counted when equal
    got = normalize({"err": "EPERM"}, rec, legacy=False)
    assert first_divergence([ref], [got]) == 0 and divergence_class(call, ref, got) == "injected"
    # never sent (the kernel failed the call first): the call's own class
    assert divergence_class(call, normalize({"err": "E2BIG"}, [], True), None) == "files"


def test_short_sequences_and_bad_lengths():
    assert len(generate(1, 3)) == 3
    with pytest.raises(ValueError):
        generate(1, 0)


def test_faults_target_what_every_transport_carries_in_its_reply():
    for seed in range(50):
        for c in generate(seed, 40):
            f = c["fault"]
            if not f:
                continue
            assert f["req"] == gen.TARGET[c["op"]]  # never LOOKUP/GETATTR, never mmap calls
            if f["kind"] in gen.PAYLOAD_KINDS:
                assert f["req"] not in ("READ", "WRITE", "READDIRPLUS")
                assert gen.fault_fits(f["kind"], f["req"])


def test_sizes_sit_at_and_around_the_limits():
    small = Config("small", 4096, 1)
    assert small.payload == 8192 and small.kmbuf_buf == 8192
    assert small.boundaries() == (4096, 8192)
    assert {4095, 4096, 4097, 8191, 8192, 8193} <= set(small.sizes())
    mid = Config("mid", 16384, 8)
    assert mid.boundaries() == (16384, 32768)
    assert {16383, 16385, 32767, 32769} <= set(mid.sizes())
    fit = small.payload - len("user.a") - 1
    assert {fit - 1, fit, fit + 1, 65536} <= set(small.xattr_sizes("user.a"))
    assert max(CONFIGS[2].xattr_sizes("user.a")) == 65536


def test_devfuse_buffer_refuses_exactly_what_the_ring_buffer_cannot_carry():
    """A SETXATTR fits /dev/fuse's read buffer (40 + 8 + name + NUL + value) iff its
    payload (name + NUL + value) fits max_payload_sz: the reference adds no window."""
    for cfg in CONFIGS[:2]:
        for value in cfg.xattr_sizes("user.big"):
            payload = len("user.big") + 1 + value
            assert (48 + payload <= cfg.devfuse_bufsize()) == (payload <= cfg.payload), (cfg, value)
        assert cfg.devfuse_bufsize() >= 80 + cfg.max_write


def _oversize_setxattr_first(calls, cfg):
    """The first setxattr too big for the payload buffer, on a path nothing before removed."""
    touched = set()
    for c in calls:
        if c["op"] in ("unlink", "rename"):
            touched.update({c.get("path"), c.get("src"), c.get("dst")})
        if c["op"] == "setxattr" and c["path"] not in touched and \
                len(c["name"]) + 1 + c["size"] > cfg.payload:
            return c
    return None


def test_default_seeds_reach_the_oversize_setxattr_of_a_small_max_pages():
    """7.3.4: E2BIG over /dev/fuse, EIO over io-uring (known issue); the default suite must
    get there: a 64 KiB value on a file that exists, with max_pages 1."""
    hits = [s for s in gen.default_seeds() if config_of(s).max_pages == 1
            and _oversize_setxattr_first(generate(s, 24), config_of(s))]
    assert hits, gen.default_seeds()
    assert {config_of(s).name for s in gen.default_seeds()} == {c.name for c in CONFIGS}


def test_seed_option():
    assert parse_seeds("") == gen.default_seeds()
    assert parse_seeds("5")[:3] == gen.default_seeds() and len(parse_seeds("5")) == 5
    assert parse_seeds("7,9") == (7, 9)
    assert parse_seeds("7,") == (7,)
    for bad in ("x", "0", "1,y"):
        with pytest.raises(ValueError, match="FUSE_HARNESS_PARITY_SEEDS"):
            parse_seeds(bad)


def test_corrupt_builds_each_lie():
    data = b"0123456789abcdef"
    assert corrupt({"kind": "errno", "errno": 5}, 10, 0, data) == (-5, 10, b"")
    assert corrupt({"kind": "error_positive"}, 10, 0, data) == (1, 10, data)
    assert corrupt({"kind": "error_erestartsys"}, 10, 0, data)[0] == -512
    assert corrupt({"kind": "error_int_min"}, 10, 0, data)[0] == -(1 << 31)
    e, u, _ = corrupt({"kind": "unique_wrong"}, 10, 0, data)
    assert u != 10 and u & 1 == 0
    assert corrupt({"kind": "reply_long"}, 10, 0, data)[2] == data + gen.PAD
    assert corrupt({"kind": "reply_short"}, 10, 0, data)[2] == data[:8]
    with pytest.raises(ValueError):
        corrupt({"kind": "nope"}, 1, 0, b"")


def test_a_fault_fires_once_on_its_opcode_and_skips_error_replies():
    calls = [{"i": 0, "fault": {"req": "STATFS", "kind": "reply_long"}},
             {"i": 1, "fault": {"req": "UNLINK", "kind": "errno", "errno": 13}},
             {"i": 2, "fault": {"req": "MKDIR", "kind": "unique_wrong"}}]
    plan = FaultPlan(calls)
    assert plan.take("STATFS", 0) is None  # no call in progress
    plan.begin(0)
    assert plan.take("LOOKUP", 0) is None
    f, rec = plan.take("STATFS", 0)
    assert f["kind"] == "reply_long" and plan.take("STATFS", 0) is None
    plan.begin(1)
    assert plan.take("UNLINK", -errno.ENOENT)[0]["errno"] == 13  # errnos replace any reply
    plan.begin(2)
    assert plan.take("MKDIR", -errno.EEXIST) is None
    assert plan.records(2) == [{"kind": "unique_wrong", "req": "MKDIR", "skipped": "error reply -EEXIST"}]


def test_normalize_compares_the_verdict_of_header_lies():
    rec = [{"kind": "error_positive", "req": "STATFS", "refused": "EINVAL"}]
    legacy = normalize({"ok": [4096]}, rec, legacy=True)  # refused at write(), answered again
    ring = normalize({"err": "EINVAL"}, [{"kind": "error_positive", "req": "STATFS"}], legacy=False)
    assert legacy == ring == {"corrupt": "error_positive", "verdict": "refused"}
    accepted = normalize({"ok": [4096]}, [{"kind": "error_positive", "req": "STATFS"}], legacy=False)
    assert accepted["verdict"] == "accepted" and accepted != legacy
    assert normalize({"hung": 10}, rec, legacy=True)["verdict"] == "hung"


def test_a_refused_reply_over_io_uring_is_the_call_ended_with_the_refusal_errno():
    """7.3 dev_uring.c: fuse_uring_commit() ends the request with -ENOENT (wrong unique) or
    -EINVAL (error out of range); /dev/fuse fails the server's write() with the same errno."""
    unique = [{"kind": "unique_wrong", "req": "READDIRPLUS"}]
    legacy = normalize({"ok": ["d0", "f0"]}, [{**unique[0], "refused": "ENOENT"}], legacy=True)
    ring = normalize({"err": "ENOENT"}, unique, legacy=False)
    assert legacy == ring == {"corrupt": "unique_wrong", "verdict": "refused"}
    assert verdict({"ok": ["d0", "f0"]}, unique[0], legacy=False) == "accepted"
    assert verdict({"ok": []}, unique[0], legacy=False) == "accepted"  # what glibc made of ENOENT
    assert verdict({"err": "EIO"}, unique[0], legacy=False) == "ended EIO"  # not the refusal
    assert verdict({}, {**unique[0], "refused": "EINVAL"}, legacy=True) == "write EINVAL"
    for kind in ("error_positive", "error_erestartsys", "error_int_min"):
        rec = {"kind": kind, "req": "STATFS"}
        assert verdict({"err": "EINVAL"}, rec, legacy=False) == "refused"
        assert verdict({"err": "ENOENT"}, rec, legacy=False) == "ended ENOENT"
        assert verdict({"ok": [1]}, {**rec, "refused": "EINVAL"}, legacy=True) == "refused"


def test_readdir_reads_the_directory_itself(tmp_path):
    """getdents64 directly (glibc's readdir() hides ENOENT): the same names as os.listdir,
    the errors of opening the directory."""
    from guest.parity.client import listdir, outcome

    for i in range(300):  # more than one getdents64 buffer
        (tmp_path / f"name-{i:04}-{'x' * 100}").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert listdir(str(tmp_path)) == sorted(os.listdir(tmp_path))
    assert listdir(str(tmp_path / "sub")) == []
    assert outcome(str(tmp_path), {"op": "readdir", "path": "nope"}) == {"err": "ENOENT"}
    assert outcome(str(tmp_path), {"op": "readdir", "path": "name-0000-" + "x" * 100}) == {"err": "ENOTDIR"}


def test_normalize_keeps_the_client_result_of_length_lies_and_errnos():
    a = normalize({"err": "EIO"}, [{"kind": "reply_long", "req": "STATFS", "refused": "EINVAL"}], True)
    b = normalize({"err": "EINVAL"}, [{"kind": "reply_long", "req": "STATFS"}], False)
    assert a["verdict"] == b["verdict"] == "refused" and a != b  # the errnos must agree too
    assert normalize({"err": "EIO"}, [{"kind": "errno", "req": "READ"}], True) == \
        normalize({"err": "EIO"}, [{"kind": "errno", "req": "READ"}], False)
    assert normalize({"ok": 1}, [], True) == {"result": {"ok": 1}}
    skipped = [{"kind": "unique_wrong", "req": "MKDIR", "skipped": "error reply -EEXIST"}]
    assert normalize({"err": "EEXIST"}, skipped, True) == normalize({"err": "EEXIST"}, skipped, False)


def test_first_divergence():
    assert first_divergence([{"a": 1}], [{"a": 1}]) is None
    assert first_divergence([{"a": 1}, {"b": 1}], [{"a": 1}, {"b": 2}]) == 1
    assert first_divergence([{"a": 1}, {"b": 1}], [{"a": 1}]) == 1  # stopped early (hung)


def _calls(n):
    return [{"i": i, "op": "stat"} for i in range(n)]


def test_shrink_to_the_pair_that_diverges():
    calls = _calls(20)
    runs = []

    def diverges(cand):  # diverges when call 4 ran before call 15, and 15 is run
        runs.append(cand)
        ids = [c["i"] for c in cand]
        return 15 in ids and 4 in ids and ids.index(4) < ids.index(15)

    small, tests, complete = shrink(calls, 15, diverges)
    assert [c["i"] for c in small] == [4, 15] and complete
    assert tests == len(runs) and tests < 20


def test_shrink_the_call_alone_first_and_stop_on_budget():
    small, tests, complete = shrink(_calls(10), 6, lambda cand: True)
    assert [c["i"] for c in small] == [6] and tests == 1 and complete
    small, tests, complete = shrink(_calls(10), 6, lambda cand: len(cand) == 7, max_tests=2)
    assert len(small) == 7 and not complete and tests == 2
    assert shrink(_calls(1), 0, lambda cand: True) == ([{"i": 0, "op": "stat"}], 0, True)


def test_scenario_registered_with_one_case_per_class():
    s = SCENARIOS["transport-parity"]
    assert s.module == "parity" and s.cases == gen.CASES
    assert {f"parity_{c}" for c in gen.CLASSES} <= set(s.cases)


def test_client_calls_on_a_plain_directory_are_deterministic(tmp_path):
    """The client's calls and their normalized results, on the host's own file system."""
    from guest.parity.client import outcome

    def run(root):
        os.makedirs(root / "d0")
        for name in ("f0", "f2", "d0/f3"):
            (root / name).write_bytes(b"x" * 5000)
        return [outcome(str(root), c) for c in generate(4, 60)
                if "xattr" not in c["op"] and c["op"] != "statfs"]  # host-wide numbers

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert a == b
    assert not [r for r in a if "died" in r], a
    assert any("ok" in r for r in a) and any("err" in r for r in a)


def test_memfd_file_system_keeps_bytes_links_and_sizes():
    from guest.fuse.proto import ROOT_ID
    from guest.parity.serve import initial_fs

    fs = initial_fs()
    try:
        f0 = fs.lookup(ROOT_ID, b"f0")
        assert f0.size == gen.INITIAL["f0"] and fs.getxattr(f0.ino, b"user.a") == b"alpha"
        fs.write(f0.ino, f0.ino, 6000, b"abc")
        assert fs.getattr(f0.ino).size == 6003 and fs.read(f0.ino, f0.ino, 6000, 10) == b"abc"
        assert fs.link(f0.ino, ROOT_ID, b"h").nlink == 2
        fs.unlink(ROOT_ID, b"f0")
        assert fs.lookup(ROOT_ID, b"h").nlink == 1
        fs.setattr(f0.ino, None, None, None, None, 10, None, None)
        assert os.fstat(fs.backing_fd(f0.ino)).st_size == 10
        assert fs.backing_fd(fs.lookup(ROOT_ID, b"d0").ino) is None
    finally:
        fs.close()
