"""virtme-ng command lines, the probe for a working KVM, and the TCG fallback."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.config import VmSettings
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


def probe_kvm(qemu: str = "qemu-system-x86_64", timeout: float = 5.0) -> Accel:
    """Decide whether KVM really works here; otherwise TCG, with the reason."""
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


def choose_accel(requested: str) -> Accel:
    """auto -> probe; kvm/tcg -> as asked (the user knows best)."""
    if requested == "auto":
        return probe_kvm()
    return Accel(requested, f"forced by --accel {requested}")
