"""A guest kept running between runs: `fuse-harness vm up` boots it, later runs adopt it.

The state of a kept guest is one JSON file per kernel build directory under
<cache>/vms/: the QEMU process group, the SSH port, the console log and the identity of the
kernel image it booted (path, size, mtime in ns). A run whose kernel image is that same file
adopts the guest instead of booting (under TCG here that saves 17-32 s per run); a run whose
build directory matches but whose image was rebuilt replaces the guest by one booted with the
new image, and keeps that one. The adopting run holds an exclusive lock on the state file for
its whole session, so two runs never share a guest: the second boots its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cache import cache_root, lock_file, write_json_atomic

log = logging.getLogger(__name__)


def state_dir() -> Path:
    return cache_root() / "vms"


def identity(image: Path) -> dict[str, Any]:
    """What makes two kernel images the same: resolved path, size, mtime in ns."""
    st = image.stat()
    return {"image": str(image.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def state_path(image: Path) -> Path:
    """<cache>/vms/<hash of the build directory>.json (image is <build>/arch/*/boot/bzImage)."""
    build = image.resolve().parents[3]
    return state_dir() / f"{hashlib.sha256(str(build).encode()).hexdigest()[:16]}.json"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def is_guest(pid: int) -> bool:
    """Whether pid is alive and still a virtme-ng/QEMU process (not a reused pid: the kept
    guest's group is killed as root, so an unrelated process must never pass)."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(word in cmdline for word in (b"qemu", b"vng", b"virtme"))


def read(path: Path) -> dict[str, Any] | None:
    """A state file's content, None when unreadable or its QEMU is gone."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and is_guest(int(state.get("pid", 0))) else None


def keep_console(console: Path, state: Path) -> Path:
    """The kept guest's console log as <state>.console.log beside its state file: a hard link
    to the one in the run folder that booted it, so it stays readable (QEMU keeps writing to
    it) when that folder is deleted; the run folder's path when no link can be made (another
    file system)."""
    link = state.with_suffix(".console.log")
    try:
        link.unlink(missing_ok=True)
        os.link(console, link)
    except OSError as exc:
        log.debug("vm: the kept guest's console stays at %s (%s)", console, exc)
        return console
    return link


def save(image: Path, pid: int, port: int, console: Path | None, accel: str, release: str,
         tcg_threads: str | None = None) -> Path:
    """Record a kept guest (tcg_threads: "single" or "multi" under TCG, as it was booted);
    returns the state file."""
    path = state_path(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    if console is not None:
        console = keep_console(console, path)
    write_json_atomic(path, {**identity(image), "pid": pid, "port": port, "accel": accel,
                             "tcg_threads": tcg_threads, "console": str(console or ""),
                             "kernel_release": release, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                               time.gmtime())})
    return path


def stop(state: dict[str, Any], path: Path | None = None) -> None:
    """Kill a kept guest's process group and forget it (its state file and the console link
    keep_console() made)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(state["pid"]), signal.SIGKILL)
    if path is not None:
        _remove(path)


def _remove(path: Path) -> None:
    """Delete a state file and its console link (keep_console())."""
    path.with_suffix(".console.log").unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def all_states() -> list[tuple[Path, dict[str, Any] | None]]:
    """Every state file with its live state (None: its QEMU is gone)."""
    d = state_dir()
    return [(p, read(p)) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


class Claim:
    """The session's hold on the kept guest of one kernel build (an exclusive flock)."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.path = state_path(image)
        self.fd: int | None = None

    def acquire(self) -> bool:
        """True when no other session holds this build's kept guest."""
        self.fd = lock_file(self.path.with_suffix(".lock"), wait=False)
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def state(self) -> tuple[dict[str, Any] | None, bool]:
        """(the live kept guest of this build or None, whether it booted this very image)."""
        state = read(self.path) if self.path.exists() else None
        if state is None:
            return None, False
        same = {k: state.get(k) for k in ("image", "size", "mtime_ns")} == identity(self.image)
        return state, same

    def settle(self, answers: Callable[[dict[str, Any]], bool] | None = None,
               found: tuple[dict[str, Any] | None, bool] | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """The kept guest of this build (found: state() as just read) and what became of it:
        (state, None) when it booted this very image (and answers(state), when given): use
        it; (state, why) when it was stopped, why "runs an older build of this kernel" or
        "does not answer"; (None, None) when there is none."""
        state, same = found if found is not None else self.state()
        if state is None:
            return None, None
        if same and (answers is None or answers(state)):
            return state, None
        stop(state, self.path)
        return state, "runs an older build of this kernel" if not same else "does not answer"


def record(image: Path, release: str, accel: str):  # noqa: ANN201
    """An on_boot callback for Vm: keep the guest that just came up and save it as this build's
    kept one. Only then: a boot interrupted before (Ctrl-C, an error) is killed at exit as any."""
    def on_boot(vm) -> None:  # noqa: ANN001
        assert vm.proc is not None and vm.guest is not None
        vm.keep()
        save(image, vm.proc.pid, vm.guest.port, vm.console_path, accel, release, vm.tcg_threads)
    return on_boot


#: $FUSE_HARNESS_KEPT_VM: "1" (default) adopt a kept guest of this build, "0" never, "keep"
#: adopt one or else keep the session's own boot for the next session (`fuse-harness bisect`
#: sets it, so a step's second repetition runs on the guest its first one booted).
KEPT_VM_ENV = "FUSE_HARNESS_KEPT_VM"


def session_claim(machine, image: Path, release: str, accel: str) -> Claim | None:  # noqa: ANN001
    """For a test session about to boot `machine`: adopt the kept guest of this kernel build
    (`fuse-harness vm up`) when it booted this very image; when the image was rebuilt since (or
    the guest does not answer), stop it and let the session's own boot be kept instead.
    With $FUSE_HARNESS_KEPT_VM=keep and no kept guest, the session's own boot is kept too.
    Returns the session's claim (release it at the end), None when no kept guest is in play
    (none, FUSE_HARNESS_KEPT_VM=0, or another session holds it)."""
    mode = os.environ.get(KEPT_VM_ENV, "1")
    if mode == "0":
        return None
    claim = Claim(image)
    if not (claim.path.exists() or mode == "keep") or not claim.acquire():
        return None
    found = claim.state()
    if found[0] is None and mode != "keep":
        claim.release()
        return None
    machine.on_boot = record(image, release, accel)
    state, stale = claim.settle(machine.adopt, found)
    if state is not None and stale is None:
        log.info("vm: reusing the kept guest (pid %s, ssh port %s, up since %s)", state["pid"], state["port"],
                 state["since"])
    elif stale is not None:
        log.info("vm: the kept guest %s; booting and keeping a new one", stale)
    return claim  # a boot to come is kept by on_boot once it is up


def forget(path: Path) -> bool:
    """Stop the kept guest of a state file if it still runs, and remove the file (True when a
    guest was running)."""
    state = read(path)
    if state is None:
        _remove(path)
        return False
    stop(state, path)
    return True


def stop_build(build_dir: Path) -> bool:
    """Stop the kept guest of one kernel build folder, if any (True when one was running)."""
    from harness.build import IMAGE

    return forget(state_path(build_dir / IMAGE))
