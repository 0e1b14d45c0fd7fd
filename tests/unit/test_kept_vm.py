"""Kept guests (`fuse-harness vm up`): which run adopts, replaces or ignores one."""

from __future__ import annotations

import os
import subprocess
import sys

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
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


class FakeVm:
    def __init__(self, answers: bool) -> None:
        self.answers, self.adopted, self.kept, self.on_boot = answers, None, False, None

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
    assert claim is not None and vm.adopted is None and vm.kept and vm.on_boot is not None
    assert sleeper.wait(timeout=10) != 0  # the old guest's process group was killed
    assert not kept.state_path(image).exists()


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
    assert claim is not None and first.kept and first.adopted is None and first.on_boot is not None
    kept.save(image, sleeper.pid, 2222, None, "tcg", "7.3.4")  # what first.on_boot records after its boot
    claim.release()
    second = FakeVm(True)
    claim = kept.session_claim(second, image, "7.3.4", "tcg")
    assert claim is not None and second.adopted["pid"] == sleeper.pid and not second.kept
    claim.release()
    build = image.parents[3]
    assert kept.stop_build(build) and sleeper.wait(timeout=10) != 0
    assert not kept.state_path(image).exists() and not kept.stop_build(build)
