"""A guest that stays up: vng in the background, SSH for control, restart after death."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from harness.bench import hostload
from harness.config import VmSettings
from harness.errors import VmError
from harness.vm import kept
from harness.vm.boot import (
    CMDLINE_MARGIN,
    COMMAND_LINE_SIZE,
    Accel,
    cmdline_length,
    tcg_threads,
    vng_command,
    vng_env,
)
from harness.vm.console import Outcome, classify
from harness.vm.control import CommandResult, Guest, byte_compile, runner_command, runner_enabled
from harness.vm.guestsh import (
    KMEMLEAK,
    KMEMLEAK_SCAN,
    READY,
    REARM_WARN_ONCE,
    STOP_UDEV,
    STUCK_SEP,
    STUCK_TASKS,
    guest_udev,
    keepalive,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EndMark:
    """What Vm.end_mark() brings back: the marker as written, the kernel log after it (str),
    and the user tasks left in D state ("STATE PID WCHAN ARGS" lines, stuck_tasks())."""

    marker: str
    dmesg: str
    stuck: list[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Vm:
    """One guest kernel under vng, driven over SSH; console logs land in run_dir."""

    def __init__(self, image: Path, settings: VmSettings, accel: Accel, run_dir: Path,
                 rwdirs: tuple[Path, ...] = (), runner_repo: Path | None = None, kmemleak: bool = False,
                 label: str = "") -> None:
        """label: names this guest's logs when several share run_dir (an xdist worker id:
        console-gw0-1.log). runner_repo: a checkout the guest sees (the host's root is its root) whose guest/
        is started as the resident runner after each boot (None: every command via the shell).
        kmemleak: the kernel has CONFIG_DEBUG_KMEMLEAK (end_mark() scans first)."""
        self.runner_repo = runner_repo
        self.label = f"{label}-" if label else ""
        self.kmemleak = kmemleak
        self.image = image
        self.settings = settings
        self.accel = accel
        self.run_dir = run_dir
        self.rwdirs = rwdirs
        self.proc: subprocess.Popen[bytes] | None = None
        self.guest: Guest | None = None
        self.boots = 0
        self.console_path: Path | None = None
        self.command: list[str] = []
        self.boot_seconds = 0.0
        self.ssh_seconds = 0.0  # of boot_seconds: until sshd answered (the rest: udev, the guest's script)
        self.boot_crashed = False
        self.kept = False  # a guest left running for later runs (harness.vm.kept): stop() keeps it
        self.adopted = False  # this run took over a kept guest: it did not boot one
        self.adopted_tcg_threads: str | None = None  # that guest's, as its state file says
        self.on_boot = None  # callable(vm) after every boot that came up (a kept guest: record it)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Boot and wait for SSH; raise VmError with the classified outcome if it never comes up.

        A guest that crashed before SSH came up is booted once more (a TCG boot now and then dies
        in early kernel code patching: "Oops: int3" at 2 s, seen on 7.2.13); a second crash, or a
        boot that timed out, is the error."""
        try:
            self._boot()
        except VmError as exc:
            if not self.boot_crashed:
                raise
            log.warning("vm: %s; booting once more", exc.message)
            self._boot()

    def _boot(self) -> None:
        self.boots += 1
        port = free_port()
        script, runner = self.boot_script()
        self.command = vng_command(self.image, self.settings, self.accel, exec_cmd=script,
                                   rwdirs=self.rwdirs, ssh_port=port)
        self.console_path = self.run_dir / f"console-{self.label}{self.boots}.log"
        stdout_path = self.run_dir / f"vng-stdout-{self.label}{self.boots}.log"
        log.info("vm: booting %s (%s: %s), console: %s", self.image.name, self.accel.kind,
                 self.accel.reason, self.console_path)
        start = time.monotonic()
        with self.console_path.open("wb") as err, stdout_path.open("wb") as out:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=vng_env(), start_new_session=True)
        # never leave a QEMU behind, whatever ends this process; keep() (a kept guest, once it
        # is up) takes this back
        atexit.register(self.kill)
        self.guest = Guest(port)
        try:
            self.guest.connect(start + self.settings.boot_timeout * self.settings.time_scale,
                               alive=self.running)
        except VmError as exc:
            rc = self.proc.poll()
            self.boot_crashed = rc is not None  # QEMU exited (a crash), rather than a boot that timed out
            outcome, why = classify(rc, self.console(), timed_out=rc is None)
            self.kill()
            raise VmError(f"VM did not come up: {outcome.value}: {why} ({exc.message})",
                          hint=f"console log: {self.console_path}") from None
        self.ssh_seconds = time.monotonic() - start
        log.info("vm: sshd answers after %.1fs; waiting for the end of the boot", self.ssh_seconds)
        # sshd answers before the boot is over (udev may still be settling, ~/.bashrc is not
        # hidden yet), or after it: keepalive()'s line on the console (as printk prints it) says
        # the script ran, udev is gone, and no SSH round trip is needed (~3 s under TCG). Until
        # then, end udev's part (STOP_UDEV) and wait for the line over SSH, so the first test
        # does not pay for the boot. Both go in every try: on a busy debug guest opening a
        # channel can time out, and a lone STOP_UDEV that failed would never be retried.
        ready = f"dmesg | grep -q '{READY}'"
        if not guest_udev():
            ready = f"{STOP_UDEV}; {ready}"
        deadline = start + self.settings.boot_timeout * self.settings.time_scale
        script_ran = False  # keepalive()'s line seen: the script (and the runner in it) started
        while self.running():
            if f"] {READY}" in self.console():
                script_ran = True
                break
            result = self.guest.run(ready, timeout=60)
            if result.ok:
                script_ran = True
                break
            log.debug("vm: not ready at %.1fs (%s)", time.monotonic() - start,
                      "timed out" if result.timed_out else f"rc {result.rc}")
            if time.monotonic() > deadline:
                log.warning("vm: SSH is up but %r never reached the kernel log; going on", READY)
                break
            time.sleep(1.0)
        self.boot_seconds = time.monotonic() - start
        log.info("vm: up in %.1fs (ssh port %d)", self.boot_seconds, port)
        if self.kmemleak:  # what boot leaked is not any test's: scan once, then forget it
            self.run(f"{KMEMLEAK_SCAN} && echo clear > {KMEMLEAK}", timeout=300)
        if self.runner_repo is not None:  # a runner this boot's script started runs this code
            self.guest.start_runner(self.runner_repo, 600 * self.settings.time_scale, reuse=True,
                                    started=runner is not None and script_ran)
        if self.on_boot is not None:
            self.on_boot(self)

    @property
    def tcg_threads(self) -> str | None:
        """"single" or "multi": how QEMU runs this guest's vCPUs under TCG, as vng_command chose
        ("auto" resolved for a guest alone, as `vm up` boots it; a kept guest's as recorded
        when it was booted, None if not recorded); None under KVM."""
        if self.adopted:
            return self.adopted_tcg_threads
        return tcg_threads(self.settings) if self.accel.kind == "tcg" else None

    def boot_script(self) -> tuple[str, str | None]:
        """(the guest's --exec script, the runner start in it or None). The script rides on the
        kernel command line (base64) beside virtme-ng's own options, which name the checkout,
        the run folder and $HOME: when the runner's start would take it past COMMAND_LINE_SIZE
        (with CMDLINE_MARGIN to spare), the runner starts over SSH after the boot instead."""
        stop_udev = not guest_udev()
        if self.runner_repo is None or not runner_enabled():
            return keepalive(None, stop_udev), None
        runner = runner_command(self.runner_repo)
        script = keepalive(runner, stop_udev)
        if cmdline_length(self.settings, script, self.rwdirs) + CMDLINE_MARGIN > COMMAND_LINE_SIZE:
            log.info("vm: no room on the kernel command line for the guest runner's start "
                     "(long paths): it starts over SSH after the boot")
            return keepalive(None, stop_udev), None
        byte_compile(self.runner_repo)
        return script, runner

    def adopt(self, state: dict) -> bool:
        """Drive a kept guest (harness.vm.kept) instead of booting one: True when it answers
        over SSH within 20 s. Its guest runner is kept if it runs this checkout's unchanged guest
        code, else restarted."""
        self.proc = _Pid(int(state["pid"]))  # type: ignore[assignment]
        self.console_path = Path(state["console"]) if state.get("console") else None
        self.guest = Guest(int(state["port"]))
        try:
            self.guest.connect(time.monotonic() + 20, alive=self.running)
            ok = self.guest.run("true", timeout=20).ok
        except VmError:
            ok = False
        if not ok:
            self.guest.close()
            self.proc, self.guest = None, None
            return False
        self.kept, self.adopted, self.boot_seconds = True, True, 0.0
        self.adopted_tcg_threads = state.get("tcg_threads")  # None: not TCG, or kept by an older harness
        self.command = ["(kept guest)", f"pid {state['pid']}", f"ssh port {state['port']}"]
        if self.runner_repo is not None:
            self.guest.start_runner(self.runner_repo, 600 * self.settings.time_scale, reuse=True)
        return True

    def keep(self) -> None:
        """Leave this guest running when the session (or the process) ends."""
        self.kept = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.kill)

    def host_load(self) -> hostload.Snapshot | None:
        """The host's CPU counters now, this VM's processes (vng, QEMU) counted as ours."""
        return hostload.snapshot(self.proc.pid if self.proc else None)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def alive(self, timeout: float = 20.0) -> bool:
        """True when the VM runs and answers a trivial command."""
        if not self.running() or self.guest is None:
            return False
        return self.guest.run("true", timeout=timeout).ok

    def kill(self) -> None:
        """Stop QEMU for sure: the whole process group (killing vng alone leaves QEMU)."""
        if self.guest is not None:
            self.guest.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Power off cleanly if possible, else kill; a kept guest is only let go."""
        if self.kept and self.running():
            if self.guest is not None:
                self.guest.close()
            return
        if self.running() and self.guest is not None and self.guest.client is not None:
            self.guest.run("sync; (sleep 0.5; echo o > /proc/sysrq-trigger) >/dev/null 2>&1 &", timeout=10)
            try:
                assert self.proc is not None
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def restart(self) -> None:
        log.warning("vm: restarting the guest")
        self.kill()
        self.start()

    # -- helpers -------------------------------------------------------------------
    def console(self) -> str:
        if self.console_path is None or not self.console_path.exists():
            return ""
        return self.console_path.read_text(errors="replace")

    def run(self, cmd: str, timeout: float | None = None) -> CommandResult:
        if self.guest is None:
            raise VmError("the VM is not running")
        return self.guest.run(cmd, timeout=(timeout or self.settings.exec_timeout) * self.settings.time_scale)

    def mark(self, text: str, rearm_warn_once: bool = False) -> str | None:
        """Write a unique marker line into the guest's kernel log; return it, or None when the
        guest is gone (so no separate liveness check is needed).

        rearm_warn_once also resets every WARN_ONCE/pr_*_once flag (debugfs
        clear_warn_once), so a once-per-boot warning is reported to each test that
        reaches it, not only to the first one."""
        if not self.running() or self.guest is None:
            return None
        marker = self._marker(text)
        rearm = f"{REARM_WARN_ONCE}; " if rearm_warn_once else ""
        result = self.run(f"{rearm}echo '{marker}' > /dev/kmsg", timeout=20)
        if result.lost or not self.running():
            return None
        # a slow guest (a debug kernel right after boot) may finish the echo after the command
        # timed out: keep the marker; a slice from a marker that never arrived is empty
        return marker

    def end_mark(self, text: str) -> EndMark | None:
        """The closing marker of a test, in one round trip: (a kmemleak scan first on a kernel
        with CONFIG_DEBUG_KMEMLEAK, so what it reports lands before the marker,) the marker, the
        whole kernel log after it, and the user tasks left in D state in FUSE or io_uring.
        None when the guest is gone or that log did not come."""
        if not self.running() or self.guest is None:
            return None
        marker = self._marker(text)
        scan = f"{KMEMLEAK_SCAN}; " if self.kmemleak else ""
        result = self.run(f"{scan}echo '{marker}' > /dev/kmsg && dmesg && echo {STUCK_SEP} && {STUCK_TASKS}",
                          timeout=120 if scan else 30)
        if result.lost or not result.ok or not self.running():
            return None
        log_text, _, stuck = result.stdout.partition(f"\n{STUCK_SEP}\n")
        return EndMark(marker, log_text + "\n", [ln.strip() for ln in stuck.split("\n") if ln.strip()])

    @staticmethod
    def _marker(text: str) -> str:
        return f"fuse-harness-mark {uuid.uuid4().hex[:12]} {text}".replace("'", "")

    def dmesg(self, timeout: float = 30.0) -> str | None:
        """The guest's whole kernel log, or None if the guest cannot be reached."""
        result = self.run("dmesg", timeout=timeout)
        return result.stdout if result.ok else None

    def classify_death(self) -> tuple[str, str]:
        """After the guest stopped answering during a test: ("panic" | "hang" | "died", why),
        from the console (a panicking guest's QEMU exits a moment later: wait up to 15 s)."""
        deadline = time.monotonic() + 15
        while self.running() and time.monotonic() < deadline:
            if classify(None, self.console(), False)[0] is Outcome.PANIC:
                break
            time.sleep(0.5)
        rc = self.proc.poll() if self.proc else None
        outcome, why = classify(rc, self.console(), timed_out=rc is None)
        if outcome is Outcome.PANIC:
            return outcome.value, why
        if rc is None:
            return "hang", "the guest stopped answering SSH (task dump saved)"
        return "died", f"QEMU exited ({why})"

    def dump_tasks(self, path: Path) -> None:
        """Best effort: a guest that hangs but still runs gets sysrq w and t, then the console's
        last 200,000 characters go to path."""
        if self.running() and self.guest is not None:
            self.guest.run("echo w > /proc/sysrq-trigger; echo t > /proc/sysrq-trigger", timeout=10)
            time.sleep(1)
        path.write_text(self.console()[-200000:])

    def outcome_of(self, result: CommandResult) -> tuple[Outcome, str]:
        """Classify a guest command's end using the console for panics."""
        console = self.console()
        if result.lost or not self.running():
            outcome, why = classify(self.proc.poll() if self.proc else None, console, False)
            if outcome is Outcome.PANIC:
                return outcome, why
            return Outcome.FAILED, "the guest died or the connection dropped during the command"
        return classify(result.rc, console, result.timed_out)


class _Pid:
    """The Popen surface Vm uses, for a process this one did not start (a kept guest)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        return None if kept.alive(self.pid) else 0

    def wait(self, timeout: float | None = None) -> int:
        end = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired("qemu", timeout or 0)
            time.sleep(0.1)
        return 0
