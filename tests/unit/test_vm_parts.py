from pathlib import Path

import pytest

from harness.config import VmSettings
from harness.source.debian import mirror_uri
from harness.vm.boot import Accel, tcg_threads, vng_command
from harness.vm.console import Outcome, classify

BOOTED = "[ 1.0] Run /init as init process\n[ 2.0] virtme-ng-init: mounting\n"


def test_classify():
    assert classify(0, BOOTED, False)[0] is Outcome.PASSED
    assert classify(3, BOOTED, False) == (Outcome.FAILED, "exit 3")
    assert classify(None, BOOTED, True)[0] is Outcome.TIMEOUT
    panic = BOOTED + "[ 9.0] Kernel panic - not syncing: sysrq triggered crash\n"
    outcome, why = classify(255, panic, False)
    assert outcome is Outcome.PANIC and "sysrq triggered crash" in why
    assert classify(255, "[ 0.1] Linux version 7.3\n", False)[0] is Outcome.BOOT_FAILURE
    assert classify(None, "", True)[0] is Outcome.BOOT_FAILURE


def test_vng_command_tcg(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.vm.boot.vng_path", lambda: "/usr/bin/vng")
    cmd = vng_command(Path("/k/bzImage"), VmSettings(), Accel("tcg", "test"), exec_cmd="true",
                      rwdirs=(tmp_path,), ssh_port=2222)
    assert "--disable-kvm" in cmd and "--force-9p" in cmd
    assert cmd[cmd.index("--append") + 1] == "fuse.enable_uring=1"
    assert cmd[cmd.index("--ssh") + 1] == "2222" and "--ssh-tcp" in cmd
    assert cmd[-2:] == ["--exec", "true"]
    # "auto" for a guest alone: a thread per vCPU unless its vCPUs outnumber the host's CPUs
    from harness.vm.boot import host_cpus

    alone = vng_command(Path("/k/bzImage"), VmSettings(cpus=host_cpus() + 1), Accel("tcg", "t"))
    assert "--qemu-opts=-accel tcg,thread=single" in alone
    assert not any("thread=" in a for a in vng_command(Path("/k/bzImage"), VmSettings(cpus=1), Accel("tcg", "t")))
    kvm = vng_command(Path("/k/bzImage"), VmSettings(), Accel("kvm", "test"))
    assert "--disable-kvm" not in kvm
    single = VmSettings(tcg_threads="single")
    assert "--qemu-opts=-accel tcg,thread=single" in vng_command(Path("/k/bzImage"), single, Accel("tcg", "t"))
    assert not any("thread=" in a for a in vng_command(Path("/k/bzImage"), single, Accel("kvm", "t")))
    # what a Vm reports (metadata, a kept guest's state file) is what its command asked QEMU for
    from harness.vm.machine import Vm

    for settings in (VmSettings(), VmSettings(cpus=host_cpus() + 1), single, VmSettings(tcg_threads="multi")):
        for accel in (Accel("tcg", "t"), Accel("kvm", "t")):
            asked = vng_command(Path("/k/bzImage"), settings, accel)
            said = Vm(Path("/k/bzImage"), settings, accel, tmp_path).tcg_threads
            single_asked = any("thread=single" in a for a in asked)
            expected = None if accel.kind == "kvm" else "single" if single_asked else "multi"
            assert said == expected, (settings, accel)


def test_tcg_threads_single_when_the_guests_vcpus_outnumber_the_host_cpus(monkeypatch):
    from harness import config as hcfg
    from harness.errors import ConfigError

    auto = VmSettings()  # 2 vCPUs
    assert tcg_threads(auto, 1, cpus=2) == "multi"
    assert tcg_threads(auto, 2, cpus=2) == "single"
    assert tcg_threads(auto, 2, cpus=4) == "multi"
    assert tcg_threads(auto, 4, cpus=4) == "single"
    assert tcg_threads(VmSettings(tcg_threads="multi"), 8, cpus=2) == "multi"  # as set
    monkeypatch.setenv("FUSE_HARNESS_TCG_THREADS", "single")
    assert tcg_threads(hcfg.vm_settings(), 1, cpus=64) == "single"
    monkeypatch.setenv("FUSE_HARNESS_TCG_THREADS", "one")
    with pytest.raises(ConfigError, match="TCG threading"):
        hcfg.vm_settings()


def test_mirror_uri_from_deb822_and_one_line(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert mirror_uri((d,)) == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("deb [arch=amd64] http://m.example/debian bookworm main\n")
    assert mirror_uri((one,)) == "http://m.example/debian"


def test_the_boot_script_starts_the_runner_before_it_says_ready(monkeypatch):
    import subprocess

    from harness.config import REPO
    from harness.vm.control import RUNNER_STAMP, code_stamp, runner_command
    from harness.vm.guestsh import KILL_UDEV, READY, keepalive

    start = runner_command(REPO)
    assert start.startswith(f"echo {code_stamp(REPO)} > {RUNNER_STAMP}; ") and start.endswith("&")
    script = keepalive(start)
    assert script.index(start) < script.index(READY) and script.endswith("exec sleep 2147483647")
    assert "guest.runner" in script and "guest.runner" not in keepalive()
    # udev ends before the line: READY on the console means no udevd is left to slow the tests
    assert script.index(KILL_UDEV) < script.index(READY)
    assert KILL_UDEV not in keepalive(start, stop_udev=False)
    # the script is valid sh, and the runner start returns at once (it is in the background)
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_udev_kill_ends_processes_by_name_with_shell_builtins(tmp_path, shell):
    """kill_by_comm(), as KILL_UDEV uses it, run here under another name (the real names would
    end the host's own udevd), for a process named like systemd's "(udev-worker)": it ends, any
    other process stays."""
    import shutil
    import subprocess

    from harness.vm.guestsh import KILL_UDEV, kill_by_comm

    pattern = "systemd-udevd|udevd|*udev-worker*"
    assert kill_by_comm(pattern) == KILL_UDEV and "pkill" not in KILL_UDEV
    for comm, hit in (("systemd-udevd", "y"), ("(udev-worker)", "y"), ("udevadm", ""), ("sshd", "")):
        out = subprocess.run([shell, "-c", f'case "$0" in {pattern}) echo y;; esac', comm],
                             capture_output=True, text=True).stdout.strip()
        assert out == hit, comm
    target = tmp_path / "(fh-udev-test)"
    shutil.copy(shutil.which("sleep"), target)
    victim = subprocess.Popen([str(target), "60"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        subprocess.run([shell, "-c", kill_by_comm("*fh-udev-test*")], check=True, timeout=30)
        assert victim.wait(timeout=10) == -9
        assert bystander.poll() is None
    finally:
        for proc in (victim, bystander):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_stuck_tasks_lists_user_tasks_by_state_and_wchan_from_proc(shell):
    """stuck_tasks() run here on the host's real /proc, for tasks asleep in nanosleep (S) rather
    than in FUSE (D): a user task is listed with its pid, wchan and arguments; no kernel thread
    is; a pattern nothing matches lists nothing."""
    import subprocess

    from harness.vm.guestsh import STUCK_TASKS, stuck_tasks

    assert "ps " not in STUCK_TASKS and "awk" not in STUCK_TASKS
    sleeper = subprocess.Popen(["sleep", "60.5"])
    # a task whose arguments hold a newline, a carriage return, a byte that is not UTF-8 and a
    # backslash-n that dash's echo would expand (both seen on CI hosts)
    odd = subprocess.Popen([b"python3", b"-c", b"import time; time.sleep(60)",
                            b"two\nlines\x80\rback\\nslash\\c end"])
    try:
        import time

        time.sleep(0.5)  # both asleep by now

        def listed(pattern: str) -> str:  # another task's arguments need not be UTF-8
            return subprocess.run([shell, "-c", stuck_tasks("S", pattern)], capture_output=True,
                                  timeout=60).stdout.decode(errors="replace")

        out = listed("*nanosleep*")
        lines = out.split("\n")[:-1]  # only a newline ends a line (splitlines also splits at \r)
        assert any(ln.startswith(f"S {sleeper.pid} ") and "nanosleep" in ln and ln.rstrip().endswith("sleep 60.5")
                   for ln in lines), out
        every = listed("*").split("\n")[:-1]
        assert len(every) > len(lines)
        for ln in every:  # one line per task (arguments with newlines too), no kernel thread
            state, pid = ln.split()[:2]
            assert state == "S" and pid.isdigit(), ln
            try:
                flags = int(Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[6])
            except FileNotFoundError:
                continue  # ended since
            assert not flags & 0x200000, ln
        assert listed("*no-such-wchan*") == ""
        assert any(ln.startswith(f"S {odd.pid} ") and ln.rstrip().endswith("two lines\ufffd back\\nslash\\c end")
                   for ln in every), every
    finally:
        for task in (sleeper, odd):
            task.kill()
            task.wait()


def test_the_runner_start_leaves_the_boot_script_when_the_command_line_would_overflow(tmp_path):
    """The boot script rides on the kernel command line (COMMAND_LINE_SIZE): the runner's start
    goes in it while everything fits with CMDLINE_MARGIN to spare, else the runner starts over
    SSH (a deep results folder is on the command line too)."""
    from harness.config import REPO, VmSettings
    from harness.vm.boot import CMDLINE_MARGIN, COMMAND_LINE_SIZE, cmdline_length
    from harness.vm.machine import READY, Vm

    def script_of(rwdir: Path) -> tuple[str, str | None]:
        vm = Vm(tmp_path / "bzImage", VmSettings(), accel=None, run_dir=tmp_path,  # type: ignore[arg-type]
                rwdirs=(rwdir,), runner_repo=REPO)
        return vm.boot_script()

    script, runner = script_of(tmp_path)
    assert runner is not None and runner in script and READY in script
    assert cmdline_length(VmSettings(), script, (tmp_path,)) + CMDLINE_MARGIN <= COMMAND_LINE_SIZE
    deep = tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200)
    script, runner = script_of(deep)
    assert runner is None and "guest.runner" not in script and READY in script


def test_auto_guests_by_cpus_memory_and_accelerator():
    from harness.vm.boot import MAX_AUTO_GUESTS, auto_guests

    two = VmSettings()  # 2 vCPUs, 2G
    assert auto_guests(two, "tcg", cpus=2, mem_available=24 << 30) == 3  # a TCG thread each, one more
    assert auto_guests(two, "kvm", cpus=2, mem_available=24 << 30) == 1  # 2 vCPUs each
    assert auto_guests(two, "kvm", cpus=12, mem_available=24 << 30) == 6
    assert auto_guests(two, "kvm", cpus=12, mem_available=6 << 30) == 2  # 2.5 GiB each
    assert auto_guests(two, "kvm", cpus=128, mem_available=1 << 40) == MAX_AUTO_GUESTS
    assert auto_guests(VmSettings(memory="512M"), "tcg", cpus=1, mem_available=1 << 30) == 1
    assert auto_guests(VmSettings(memory="4096"), "tcg", cpus=8, mem_available=10 << 30) == 2  # MiB
    assert auto_guests(two, "tcg", cpus=16, mem_available=1 << 40) == MAX_AUTO_GUESTS
    multi = VmSettings(tcg_threads="multi")  # a thread per vCPU: as under KVM
    assert auto_guests(multi, "tcg", cpus=4, mem_available=24 << 30) == 2


def test_guest_memory_is_checked_up_front(monkeypatch):
    from harness import config as hcfg
    from harness.errors import ConfigError

    assert hcfg.memory_bytes("2G") == 2 << 30 and hcfg.memory_bytes("512m") == 512 << 20
    assert hcfg.memory_bytes("4096") == 4 << 30  # MiB, as QEMU's -m
    for bad in ("2GB", "lots", "-512M", "64M", ""):
        with pytest.raises(ConfigError, match="bad guest memory"):
            hcfg.memory_bytes(bad)
    monkeypatch.setenv("FUSE_HARNESS_MEMORY", "2GB")
    with pytest.raises(ConfigError, match="FUSE_HARNESS_MEMORY"):
        hcfg.vm_settings()
    monkeypatch.setenv("FUSE_HARNESS_MEMORY", "2G")
    monkeypatch.setenv("FUSE_HARNESS_CPUS", "0")
    with pytest.raises(ConfigError, match="vCPU"):
        hcfg.vm_settings()
