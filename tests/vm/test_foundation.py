"""The spine: the built kernel boots, is the target's, and has what FUSE-over-io-uring needs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from harness.plugin import health, state

PY = "/usr/bin/python3"
#: A kernel WARNING as WARN() prints it (harness.dmesg classifies it WARNING, fingerprint
#: WARNING:fake_splat; not an oops kind, so no fresh guest follows), written to /dev/kmsg.
FAKE_WARNING = "WARNING: CPU: 0 PID: 1 at fs/fuse/fake.c:42 fake_splat+0x10/0x20"


def guest_py(vm, code: str, timeout: float = 120):
    """Run a Python snippet in the guest with the system interpreter (stdlib only)."""
    return vm.run(f"{PY} - <<'EOF'\n{textwrap.dedent(code)}\nEOF", timeout=timeout)


def test_kernel_is_the_targets(vm, kernel, target):
    result = vm.run("uname -r")
    assert result.ok, result.stderr
    release = result.stdout.strip()
    assert release == kernel.built.kernel_release, "the guest runs another kernel than the one built"
    if target.kernel_version:
        assert re.match(rf"{re.escape(target.kernel_version)}(\.|$|-)", release), (
            f"target {target.name} promises Linux {target.kernel_version}, guest runs {release}"
        )


def test_enable_uring_is_on(vm):
    result = vm.run("cat /sys/module/fuse/parameters/enable_uring")
    assert result.ok, f"fuse has no enable_uring parameter: {result.stderr}"
    assert result.stdout.strip() == "Y"


def test_kernel_config_has_fuse_io_uring(kernel):
    text = kernel.built.config.read_text()
    for option in ("CONFIG_FUSE_FS=y", "CONFIG_FUSE_IO_URING=y", "CONFIG_IO_URING=y"):
        assert re.search(rf"^{option}$", text, re.M), f"{option} missing from the built .config"


def test_dev_fuse_mounts_and_sends_init(vm):
    """Open /dev/fuse, mount(2) a FUSE file system on it, read the kernel's INIT request."""
    result = guest_py(vm, r"""
        import ctypes, os, struct, tempfile
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/dev/fuse", os.O_RDWR)
        mnt = tempfile.mkdtemp()
        opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        if libc.mount(b"fh-probe", mnt.encode(), b"fuse.fh-probe", 0, opts) != 0:
            raise SystemExit(f"mount failed: {os.strerror(ctypes.get_errno())}")
        buf = os.read(fd, 1 << 20)
        length, opcode, unique = struct.unpack_from("<IIQ", buf, 0)
        major, minor = struct.unpack_from("<II", buf, 40)
        print(f"opcode={opcode} major={major} minor={minor}")
        os.close(fd)  # aborts the connection: nothing can wedge
        libc.umount2(mnt.encode(), 2)
    """)
    assert result.ok, result.stdout + result.stderr
    m = re.search(r"opcode=(\d+) major=(\d+) minor=(\d+)", result.stdout)
    assert m, result.stdout
    assert int(m.group(1)) == 26, "first request on a new FUSE connection must be FUSE_INIT (26)"
    assert int(m.group(2)) == 7


def test_io_uring_setup_with_sqe128(vm):
    """io_uring_setup(2) with IORING_SETUP_SQE128 (what FUSE's uring commands need) works."""
    result = guest_py(vm, r"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        params = ctypes.create_string_buffer(120)
        ctypes.c_uint32.from_buffer(params, 8).value = 1 << 10  # IORING_SETUP_SQE128
        fd = libc.syscall(425, 8, params)
        if fd < 0:
            raise SystemExit(f"io_uring_setup: {os.strerror(ctypes.get_errno())}")
        sq_entries = ctypes.c_uint32.from_buffer(params, 0).value
        features = ctypes.c_uint32.from_buffer(params, 20).value
        print(f"fd={fd} sq_entries={sq_entries} features={features:#x}")
        os.close(fd)
    """)
    assert result.ok, result.stdout + result.stderr
    assert re.search(r"sq_entries=8 ", result.stdout), result.stdout


def test_io_uring_not_disabled(vm):
    result = vm.run("cat /proc/sys/kernel/io_uring_disabled")
    assert result.ok and result.stdout.strip() == "0"


@pytest.mark.expect_kernel_finding("WARNING", r"fs/fuse/fake\.c:42")
def test_kernel_finding_is_attributed_to_its_test(vm):
    """A kernel WARNING written during a test is a finding of that test and of no later one.

    That test: the plugin's verdict (expect_kernel_finding): this test passes only if its own
    kernel-log slice holds the WARNING, and fails on any other finding; without the mark the
    WARNING alone fails it. No later one: a probe slice begun after the WARNING and cut as the
    plugin cuts the next test's (Vm.mark BEGIN with WARN_ONCE re-armed, Vm.end_mark END with
    the whole log, health.cut, health.findings_in) holds no finding. One guest, no reboot: the
    cheap half of test_dmesg_attribution_and_vm_recovery (slow), which sees the plugin fail a
    real nested test for a WARNING and replace a guest after a panic and an oops."""
    assert vm.run(f"echo '{FAKE_WARNING}' > /dev/kmsg").ok, "cannot write to the guest's /dev/kmsg"
    start = vm.mark("BEGIN probe slice after the fake warning", rearm_warn_once=True)
    end = vm.end_mark("END probe slice after the fake warning") if start else None
    if end is None:
        pytest.fail("the guest stopped answering while the probe slice was cut", pytrace=False)
    lines = end.dmesg.splitlines()
    warned = [i for i, line in enumerate(lines) if "fs/fuse/fake.c:42" in line]
    begun = [i for i, line in enumerate(lines) if start in line]
    if not warned or not begun or warned[-1] > begun[0]:
        pytest.fail("not exercised: the guest's kernel log lacks the fake WARNING before the probe's "
                    f"BEGIN marker (WARNING at lines {warned}, marker at {begun})", pytrace=False)
    whole = [f for f in health.findings_in(end.dmesg) if f.kind == "WARNING" and "fake.c:42" in f.line]
    assert whole, "the classifier does not see the fake WARNING in the guest's whole kernel log"
    probe = health.cut(end, start)
    assert "fake.c:42" not in probe and health.findings_in(probe) == [], (
        f"a slice begun after the WARNING is not clean (it would leak into the next test):\n{probe}")


test_kernel_finding_is_attributed_to_its_test.harness_selftest = True  # fuse-harness mutate leaves it out


def _same_target(pytestconfig, target) -> str:  # noqa: ANN001
    """--target for a nested session: this session's own (a name, or a file made absolute:
    the nested session runs elsewhere), else the target's name."""
    given = state.target_name(pytestconfig)
    if given and Path(given).is_file():
        return str(Path(given).resolve())
    return given or target.name


@pytest.mark.slow  # three boots: `make test-slow`; test_kernel_finding_is_attributed_to_its_test is the quick half
@pytest.mark.long(100)
def test_dmesg_attribution_and_vm_recovery(pytester, pytestconfig, monkeypatch, vm, kernel, target, profile, run_dir):
    """In a nested pytest session on real VMs: a kernel WARNING written during a test fails
    exactly that test, a guest crashed mid-test is classified and replaced by a fresh one for
    the next test, and so is a guest an oops left running (its state may be corrupt)."""
    # pytester gives the inner session (and this test) a fresh HOME: keep the inner session
    # on the cache that holds this kernel's source and build (<cache>/builds/<key>).
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(kernel.built.build_dir.parents[1]))
    # its guests share the host's CPUs as this session's do (one TCG thread each under `-n`)
    monkeypatch.setenv("FUSE_HARNESS_TCG_THREADS", vm.settings.tcg_threads)
    pytester.makepyfile(
        test_inner=r'''
        import pytest

        @pytest.mark.vm
        def test_a_warns(vm):
            vm.run("echo 'WARNING: CPU: 0 PID: 1 at fs/fuse/fake.c:42 fake_splat+0x10/0x20' > /dev/kmsg")

        @pytest.mark.vm
        def test_b_quiet(vm):
            assert vm.run("true").ok

        @pytest.mark.vm
        def test_c_crash(vm):
            vm.run("echo c > /proc/sysrq-trigger", timeout=60)

        @pytest.mark.vm
        def test_d_after_crash(vm):
            assert vm.run("uname -r").ok

        @pytest.mark.vm
        def test_e_oops(vm):
            with open("boot_id.txt", "w") as f:
                f.write(vm.run("cat /proc/sys/kernel/random/boot_id").stdout.strip())
            vm.run("echo 'kernel BUG at fs/fuse/fake.c:7!' > /dev/kmsg")

        @pytest.mark.vm
        def test_f_fresh_after_oops(vm):
            with open("boot_id.txt") as f:
                assert vm.run("cat /proc/sys/kernel/random/boot_id").stdout.strip() != f.read()
        '''
    )
    inner = pytester.runpytest_subprocess(
        # the target as this session got it: a name, or a file (fuse-harness mutate's workspace
        # target, whose kernel is the mutant's: its name would build the plain target)
        "-p", "no:cacheprovider", "--target", _same_target(pytestconfig, target), "--profile", profile,
        "--results-dir", str(run_dir / "nested"), "-v",
        # three boots (the first, after the crash, after the oops), four when TCG's early-boot
        # flake costs a retry: ~25 s each here, 4-9 min each on a debug kernel
        # under TCG (whose profile scales timeouts; one such run took 2690 s of 2700)
        timeout=1200 * vm.settings.time_scale,
    )
    out = inner.stdout.str()
    inner.assert_outcomes(passed=3, failed=3)
    assert re.search(r"test_a_warns FAILED", out)
    assert "kernel log findings during this test" in out and "fake.c:42" in out
    assert re.search(r"test_b_quiet PASSED", out)
    assert re.search(r"test_c_crash FAILED", out)
    assert "kernel-panic" in out, "the crash must be classified as a kernel panic"
    assert re.search(r"test_d_after_crash PASSED", out)
    # an oops taints the guest: the test fails and the next one gets a freshly booted guest
    assert re.search(r"test_e_oops FAILED", out) and "BUG" in out
    assert re.search(r"test_f_fresh_after_oops PASSED", out), "the guest was not rebooted after the oops"
    # one fresh guest per crash or oops: the dead guest's panic (a finding of test_c_crash) must
    # not cost a second reboot, nor the WARNING a first one
    consoles = sorted(p.name for p in (run_dir / "nested").glob("*/console-*.log"))
    retried = "booting once more" in out + inner.stderr.str()
    assert len(consoles) == 3 or (retried and len(consoles) == 4), (consoles, out)


test_dmesg_attribution_and_vm_recovery.harness_selftest = True  # fuse-harness mutate leaves it out
