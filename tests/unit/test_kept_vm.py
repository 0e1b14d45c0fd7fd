"""Kept guests (`fuse-harness vm up`): which run adopts, replaces or ignores one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.vm import kept


@pytest.fixture
def image(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    img = tmp_path / "builds" / "v7.3-default-abc" / "arch" / "x86" / "boot" / "bzImage"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"kernel")
    return img


@pytest.fixture
def sleeper():
    # argv[0] as a QEMU's: kept.read only trusts a pid whose command line is a guest's
    proc = subprocess.Popen(["qemu-system-x86_64", "-c", "import time; time.sleep(60)"], executable=sys.executable,
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while not kept.is_guest(proc.pid) and time.monotonic() < deadline:  # until it has exec'd
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


class FakeVm:
    def __init__(self, answers: bool) -> None:
        self.answers, self.adopted, self.kept, self.on_boot = answers, None, False, None
        self.proc = self.guest = self.console_path = None
        self.tcg_threads = "multi"  # a lone guest under TCG: a thread per vCPU

    def boot(self, pid: int) -> None:
        """What Vm._boot does once the guest is up: on_boot (kept.record) keeps and saves it."""
        self.proc, self.guest = SimpleNamespace(pid=pid), SimpleNamespace(port=2222)
        self.on_boot(self)

    def adopt(self, state):
        self.adopted = state
        return self.answers

    def keep(self):
        self.kept = True


def test_same_image_is_adopted_and_held(image, sleeper, tmp_path):
    kept.save(image, sleeper.pid, 2222, tmp_path / "console-1.log", "tcg", "7.3.4")
    vm = FakeVm(answers=True)
    claim = kept.session_claim(vm, image, "7.3.4", "tcg")
    assert claim is not None and vm.adopted["port"] == 2222 and not vm.kept
    assert kept.session_claim(FakeVm(True), image, "7.3.4", "tcg") is None  # held by the first session
    claim.release()
    assert kept.session_claim(FakeVm(True), image, "7.3.4", "tcg") is not None


def test_rebuilt_image_replaces_the_kept_guest(image, sleeper, tmp_path):
    kept.save(image, sleeper.pid, 2222, None, "tcg", "7.3.4")
    image.write_bytes(b"kernel, rebuilt")
    os.utime(image, ns=(1, 1))
    vm = FakeVm(answers=True)
    claim = kept.session_claim(vm, image, "7.3.4", "tcg")
    assert claim is not None and vm.adopted is None and not vm.kept and vm.on_boot is not None
    assert sleeper.wait(timeout=10) != 0  # the old guest's process group was killed
    assert not kept.state_path(image).exists()


def test_settle_says_what_became_of_the_kept_guest(image, sleeper, tmp_path):
    """Claim.settle, shared by `vm up` and a session: reuse, or stop and say why."""
    kept.save(image, sleeper.pid, 2222, None, "tcg", "7.3.4")
    claim = kept.Claim(image)
    state, why = claim.settle()
    assert state["port"] == 2222 and why is None and sleeper.poll() is None  # `vm up`: already up
    state, why = claim.settle(lambda state: False)
    assert state["port"] == 2222 and why == "does not answer"
    assert sleeper.wait(timeout=10) != 0 and not kept.state_path(image).exists()
    assert claim.settle() == (None, None)


def test_no_kept_guest_or_opted_out(image, sleeper, tmp_path, monkeypatch):
    assert kept.session_claim(FakeVm(True), image, "7.3.4", "tcg") is None
    kept.save(image, sleeper.pid, 2222, None, "tcg", "7.3.4")
    monkeypatch.setenv("FUSE_HARNESS_KEPT_VM", "0")
    vm = FakeVm(True)
    assert kept.session_claim(vm, image, "7.3.4", "tcg") is None and vm.adopted is None


def test_dead_guest_is_stale(image, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    kept.save(image, proc.pid, 2222, None, "tcg", "7.3.4")
    assert kept.read(kept.state_path(image)) is None
    assert kept.session_claim(FakeVm(True), image, "7.3.4", "tcg") is None
    assert [s for _, s in kept.all_states()] == [None]


def test_keep_mode_keeps_the_first_boot_and_the_next_session_adopts_it(image, sleeper, tmp_path, monkeypatch):
    monkeypatch.setenv(kept.KEPT_VM_ENV, "keep")
    first = FakeVm(True)
    claim = kept.session_claim(first, image, "7.3.4", "tcg")
    # not kept before it is up: a boot interrupted halfway is killed at exit like any other
    assert claim is not None and not first.kept and first.adopted is None and first.on_boot is not None
    first.boot(sleeper.pid)
    assert first.kept and kept.read(kept.state_path(image))["pid"] == sleeper.pid
    assert kept.read(kept.state_path(image))["tcg_threads"] == "multi"  # for the run that adopts it
    claim.release()
    second = FakeVm(True)
    claim = kept.session_claim(second, image, "7.3.4", "tcg")
    assert claim is not None and second.adopted["pid"] == sleeper.pid and not second.kept
    claim.release()
    build = image.parents[3]
    assert kept.stop_build(build) and sleeper.wait(timeout=10) != 0
    assert not kept.state_path(image).exists() and not kept.stop_build(build)


def test_a_reused_pid_is_not_taken_for_the_guest(image, tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        kept.save(image, other.pid, 2222, None, "tcg", "7.3.4")  # the guest died; its pid went to `other`
        assert kept.read(kept.state_path(image)) is None
        assert not kept.stop_build(image.parents[3])
        assert other.poll() is None  # never killed
    finally:
        other.kill()
        other.wait()


def test_the_kept_console_outlives_the_run_folder_that_booted_it(image, sleeper, tmp_path):
    """The state names a hard link beside it: QEMU's writes stay readable after the run folder
    is deleted, and stopping the guest removes the link."""
    run = tmp_path / "results" / "001-v7.3-default"
    run.mkdir(parents=True)
    console = run / "console-1.log"
    console.write_text("[    1.0] booting\n")
    path = kept.save(image, sleeper.pid, 2222, console, "tcg", "7.3.4")
    linked = Path(kept.read(path)["console"])
    assert linked.parent == path.parent and linked.read_text() == console.read_text()
    with console.open("a") as qemu:  # QEMU's file descriptor, still open after the folder goes
        import shutil

        shutil.rmtree(run.parent)
        qemu.write("[    2.0] later\n")
    assert linked.read_text().endswith("later\n")
    assert kept.forget(path) and not linked.exists() and not path.exists()
