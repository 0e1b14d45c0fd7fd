from pathlib import Path

from harness import dmesg

DATA = Path(__file__).parent.parent / "data" / "dmesg"


def test_warning_counted_once_with_function_fingerprint():
    findings = dmesg.scan((DATA / "warn.log").read_text())
    assert len(findings) == 1
    f = findings[0]
    assert f.kind == "WARNING"
    assert "dev_uring.c:612" in f.line
    assert f.fingerprint == "WARNING:fuse_uring_out_header_has_err"
    assert "end trace" in f.excerpt


def test_kasan_is_not_a_plain_bug():
    findings = dmesg.scan((DATA / "kasan.log").read_text())
    assert [f.kind for f in findings] == ["KASAN"]
    assert findings[0].fingerprint == "KASAN:fuse_uring_req_end"


def test_hung_task():
    findings = dmesg.scan((DATA / "hung.log").read_text())
    assert [f.kind for f in findings] == ["HUNG_TASK"]


def test_clean_log_has_no_findings():
    text = "[ 1.0] fuse: init (API version 7.46)\n[ 2.0] random: crng init done\n"
    assert dmesg.scan(text) == []


def test_other_kinds():
    lines = {
        "UBSAN": "[ 1.0] UBSAN: invalid-load in fs/fuse/dev_uring.c:1234:5",
        "LOCKDEP": "[ 1.0] WARNING: possible circular locking dependency detected",
        "RCU_STALL": "[ 1.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
        "OOPS": "[ 1.0] Oops: general protection fault, probably for non-canonical address",
        "PANIC": "[ 1.0] Kernel panic - not syncing: sysrq triggered crash",
        "BUG": "[ 1.0] kernel BUG at fs/fuse/dev.c:1053!",
        "SLEEP_IN_ATOMIC": "[ 1.0] BUG: sleeping function called from invalid context at mm/slab.c:1",
    }
    for kind, line in lines.items():
        found = dmesg.scan(line)
        assert found and found[0].kind == kind, (kind, found)


def test_slice_between_markers():
    text = "a\nMARK-BEGIN x\nb\nc\nMARK-END x\nd\n"
    assert dmesg.slice_between(text, "MARK-BEGIN x", "MARK-END x") == "b\nc"
    assert dmesg.slice_between(text, "MARK-BEGIN x", None) == "b\nc\nMARK-END x\nd"
    # a lost BEGIN marker (never written, or the log buffer wrapped): from the first line, so
    # a finding is never dropped with its slice
    assert dmesg.slice_between(text, "missing", "MARK-END x") == text.split("\nMARK-END x")[0]
    assert dmesg.slice_between(text, None, "MARK-END x") == text.split("\nMARK-END x")[0]


def test_finding_matches_expected_patterns():
    f = dmesg.scan((DATA / "warn.log").read_text())[0]
    assert f.matches(r"fuse_uring_out_header_has_err")
    assert f.matches(r"^WARNING$")
    assert not f.matches(r"KASAN")


def test_warning_in_the_7x_format():
    """7.x prints `WARNING: file:line at fn+off, CPU#n: comm/pid` (no `CPU: n PID: n at`)."""
    findings = dmesg.scan((DATA / "warn73.log").read_text())
    assert [f.kind for f in findings] == ["WARNING"]
    assert findings[0].fingerprint == "WARNING:fuse_uring_cmd"
    assert "dev_uring.c:653" in findings[0].line
    # the same line without its "cut here" header is still a finding
    assert dmesg.scan((DATA / "warn73.log").read_text().splitlines()[1])[0].kind == "WARNING"


def _kcsan(a: str, b: str) -> str:
    return "\n".join([
        "[  12.000000] ==================================================================",
        f"[  12.000001] BUG: KCSAN: data-race in {a} / {b}",
        "[  12.000002] ",
        "[  12.000003] write to 0xffff888003a1c0d8 of 4 bytes by task 214 on cpu 1:",
        f"[  12.000004]  {a}+0x5c/0x120",
        "[  12.000005]  do_syscall_64+0x9e/0x1a0",
        "[  12.000006] ",
        "[  12.000007] read to 0xffff888003a1c0d8 of 4 bytes by task 0 on cpu 0:",
        f"[  12.000008]  {b}+0x20/0x60",
        "[  12.000009] ==================================================================",
        "[  12.000010] other task: fuse_dev_do_read+0x10/0x20",
    ])


def test_kcsan_is_its_own_kind_and_scoped_to_fuse_and_io_uring():
    (ours,) = dmesg.scan(_kcsan("fuse_uring_commit_fetch", "fuse_uring_send_in_task"))
    assert ours.kind == "KCSAN" and dmesg.in_scope(ours)
    (theirs,) = dmesg.scan(_kcsan("tick_sched_do_timer", "ktime_get_update_offsets_now"))
    assert theirs.kind == "KCSAN" and not dmesg.in_scope(theirs)  # the trailing line is not its report
    (uring,) = dmesg.scan(_kcsan("io_req_task_work_add", "io_uring_cmd_done"))
    assert dmesg.in_scope(uring)
    assert all(dmesg.in_scope(f) for f in dmesg.scan("[ 1.0] BUG: KASAN: use-after-free in tick_x+0x1/0x2"))


def test_race_profile_is_slow_and_known():
    from harness import config

    assert config.PROFILES["race"] == ("race",)
    assert (config.REPO / "kconfigs" / "race.config").read_text().count("CONFIG_KCSAN=y") == 1
    s = config.vm_settings("race")
    assert s.time_scale == config.DEBUG_TIME_SCALE and "kmemleak=off" not in s.append


def test_kmemleak_runs_where_built_in_and_not_switched_off(monkeypatch):
    """The one kmemleak decision (VmSettings.kmemleak): the debug profile boots it off unless
    FUSE_HARNESS_KMEMLEAK=1; other profiles leave a built-in kmemleak on."""
    from harness import config

    monkeypatch.delenv("FUSE_HARNESS_KMEMLEAK", raising=False)
    assert not config.vm_settings("debug").kmemleak(built_in=True)
    assert config.vm_settings("default").kmemleak(built_in=True)
    assert not config.vm_settings("default").kmemleak(built_in=False)
    monkeypatch.setenv("FUSE_HARNESS_KMEMLEAK", "1")
    assert config.vm_settings("debug").kmemleak(built_in=True)
