"""virtme-ng command lines, the probe for a working KVM, and the TCG fallback."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.config import VmSettings, memory_bytes
from harness.errors import MissingTool

log = logging.getLogger(__name__)

VNG_HINT = "run `make setup` (it installs virtme-ng into .venv), or: pip install virtme-ng"


@dataclass(frozen=True)
class Accel:
    """The chosen accelerator and why."""

    kind: str  # "kvm" or "tcg"
    reason: str


def vng_path() -> str:
    """The vng executable: the one beside our Python first (a venv), then PATH."""
    beside = Path(sys.executable).parent / "vng"
    if beside.exists():
        return str(beside)
    found = shutil.which("vng")
    if not found:
        raise MissingTool("virtme-ng (vng) not found", hint=VNG_HINT)
    return found


def vng_env() -> dict[str, str]:
    """vng shells out to virtme-run/virtme-configkernel by name: put its bin dir first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(vng_path()).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kvm_obstacle() -> Accel | None:
    """What probe_kvm() decides without starting QEMU: the forced accelerator, or TCG with the
    reason KVM cannot work here; None when only a test guest can tell."""
    forced = os.environ.get("FUSE_HARNESS_ACCEL", "auto")
    if forced in ("kvm", "tcg"):
        return Accel(forced, f"forced by FUSE_HARNESS_ACCEL={forced}")
    if not os.path.exists("/dev/kvm"):
        return Accel("tcg", "/dev/kvm does not exist")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "/dev/kvm is not read-writable by this user (add yourself to group kvm)")
    flags = _cpu_flags()
    if not flags & {"vmx", "svm"}:
        return Accel("tcg", "/dev/kvm exists but the CPU has no vmx/svm flag (paravirtual or nested KVM "
                     "that cannot run a normal guest)")
    return None


def probe_kvm(qemu: str = "qemu-system-x86_64", timeout: float = 5.0) -> Accel:
    """Decide whether KVM really works here; otherwise TCG, with the reason."""
    obstacle = kvm_obstacle()
    if obstacle is not None:
        return obstacle
    if not shutil.which(qemu):
        raise MissingTool(f"{qemu} not found", hint="apt-get install qemu-system-x86")
    try:
        result = subprocess.run(
            [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-nodefaults", "-display", "none",
             "-m", "64", "-no-reboot"],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Accel("kvm", "KVM guest started and ran")
    err = (result.stderr or "").strip().splitlines()
    return Accel("tcg", f"KVM test guest failed: {err[-1] if err else f'exit {result.returncode}'}")


def vng_command(
    image: Path,
    settings: VmSettings,
    accel: Accel,
    exec_cmd: str | None = None,
    rwdirs: tuple[Path, ...] = (),
    ssh_port: int | None = None,
    verbose_console: bool = True,
) -> list[str]:
    """The full vng command line for booting image."""
    cmd = [vng_path(), "--run", str(image), "--force-9p", "-m", settings.memory, "-p", str(settings.cpus)]
    if accel.kind == "tcg":
        cmd.append("--disable-kvm")
        if tcg_threads(settings) == "single":  # "auto" here: this guest alone on the host
            cmd.append("--qemu-opts=-accel tcg,thread=single")
    for arg in settings.append:
        cmd += ["--append", arg]
    for d in rwdirs:
        cmd += ["--rwdir", str(d)]
    if ssh_port is not None:
        cmd += ["--ssh", str(ssh_port), "--ssh-tcp"]
    if verbose_console:
        cmd.append("--verbose")
    if exec_cmd is not None:
        cmd += ["--exec", exec_cmd]
    return cmd


#: x86's COMMAND_LINE_SIZE: the kernel cuts a longer command line, and --exec's script with it.
COMMAND_LINE_SIZE = 2048
#: What virtme-ng 1.42 puts on the kernel command line besides the parts cmdline_length()
#: counts (hostname, overlays, console, ssh, 9p root options), in characters. Calibrated on a
#: real boot here (QEMU's -append, from a checkout at a 9-character path): 1353 characters,
#: estimated 1354.
VNG_FIXED_CMDLINE = 601
#: Room left for what another virtme-ng version may add.
CMDLINE_MARGIN = 150


def cmdline_length(settings: VmSettings, exec_cmd: str, rwdirs: tuple[Path, ...] = (),
                   cwd: Path | None = None) -> int:
    """Estimated length (characters) of the kernel command line vng makes for vng_command():
    the fixed part, --append, one virtme_initmount triple per rwdir, the working folder
    (virtme_chdir), virtme-ng's init path, the ssh cache under $HOME, and --exec's script in
    base64."""
    import base64
    import importlib.util

    spec = importlib.util.find_spec("virtme")
    init = (len(str(Path(spec.origin).parent / "guest" / "bin" / "virtme-ng-init"))
            if spec is not None and spec.origin else 100)
    return (VNG_FIXED_CMDLINE + sum(len(a) + 1 for a in settings.append)
            + sum(len(str(d)) + 60 for d in rwdirs) + len(str(cwd or Path.cwd())) + init
            + len(os.environ.get("HOME", "/root")) + len(base64.b64encode(exec_cmd.encode())))


def choose_accel(requested: str) -> Accel:
    """auto -> probe; kvm/tcg -> as asked (the user knows best)."""
    if requested == "auto":
        return probe_kvm()
    return Accel(requested, f"forced by --accel {requested}")


#: Most guests `-n auto` starts: each boots for 10-30 s, and the default suite has about 85
#: VM tests, so more guests mostly add boots.
MAX_AUTO_GUESTS = 8


def _mem_available() -> int:
    """Bytes this process's guests may use: MemAvailable of /proc/meminfo, or the cgroup's
    memory.max when lower (a CI container); 0 when unreadable."""
    avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = int(Path("/sys/fs/cgroup/memory.max").read_text().strip())
    except (OSError, ValueError):  # absent, or "max"
        return avail
    return min(avail, limit) if avail else limit


def host_cpus() -> int:
    """CPUs this process may run on (its affinity), or fewer under a cgroup CPU quota
    (cpu.max "QUOTA PERIOD": QUOTA/PERIOD CPUs, rounded up)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return max(1, min(cpus, -(-int(quota) // int(period))))
    except (OSError, ValueError):  # absent, or "max 100000"
        return cpus


def tcg_threads(settings: VmSettings, guests: int = 1, cpus: int | None = None) -> str:
    """QEMU's TCG threading for one of `guests` guests side by side: as set, or for "auto"
    "single" when their vCPUs (guests x settings.cpus) outnumber the host's CPUs (cpus,
    default host_cpus(): the affinity, bounded by a cgroup quota), else
    "multi". Measured here (2 cores): one guest runs the transport checks as fast with one TCG
    thread as with one per vCPU (the FUSE round trips are serial: 125 s and 121 s multi, 127 s
    and 129 s single, alternated), and uses one core instead of 1.1 on average; with a thread
    per vCPU, two guests' four vCPU threads on 2 cores wait for each other (`-n 2` was 0.93x of
    one guest)."""
    if settings.tcg_threads != "auto":
        return settings.tcg_threads
    cores = cpus if cpus is not None else host_cpus()
    return "single" if guests * settings.cpus > cores else "multi"


def auto_guests(settings: VmSettings, accel: str, cpus: int | None = None,
                mem_available: int | None = None) -> int:
    """How many guests `-n auto` runs side by side: under TCG one per host CPU and one more (a
    guest among several gets one TCG thread, see tcg_threads(); the extra guest works
    while others wait on kernel timers: request timeouts of 15-30 s, 10 s starvation and hang
    checks); under KVM, or with FUSE_HARNESS_TCG_THREADS=multi, one per `settings.cpus` host
    CPUs. At most as many as the memory holds (guest memory plus 512 MiB for QEMU each), at
    most MAX_AUTO_GUESTS, at least 1. cpus: host CPUs, default host_cpus(); mem_available:
    bytes, default MemAvailable (or the cgroup's memory.max when lower). Measured here
    (2 cores, TCG, the default VM suite): 3 guests 293 s, 2 guests 337 s, one guest 512 s."""
    cores = cpus if cpus is not None else host_cpus()
    one_thread = accel == "tcg" and settings.tcg_threads != "multi"
    by_cpu = cores + 1 if one_thread else cores // max(1, settings.cpus)
    avail = mem_available if mem_available is not None else _mem_available()
    by_mem = avail // (memory_bytes(settings.memory) + (512 << 20)) if avail else by_cpu
    return max(1, min(by_cpu, by_mem, MAX_AUTO_GUESTS))
