"""Vm.start boots once more after a guest that crashed before SSH, never after a timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import VmSettings
from harness.errors import VmError
from harness.vm.machine import Vm


def _vm(tmp_path: Path, outcomes: list[bool | None]) -> tuple[Vm, list[int]]:
    """A Vm whose boots follow outcomes: None comes up, True crashes, False times out."""
    vm = Vm(tmp_path / "bzImage", VmSettings(), accel=None, run_dir=tmp_path)  # type: ignore[arg-type]
    calls: list[int] = []

    def boot() -> None:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            vm.boot_crashed = outcome
            raise VmError("VM did not come up: kernel-panic: Oops: int3" if outcome else "no SSH in 180s")

    vm._boot = boot  # type: ignore[method-assign]
    return vm, calls


def test_a_crashed_boot_is_retried_once(tmp_path):
    vm, calls = _vm(tmp_path, [True, None])
    vm.start()
    assert len(calls) == 2
    vm, calls = _vm(tmp_path, [True, True])
    with pytest.raises(VmError, match="int3"):
        vm.start()
    assert len(calls) == 2


def test_a_timed_out_boot_is_not_retried(tmp_path):
    vm, calls = _vm(tmp_path, [False, None])
    with pytest.raises(VmError, match="no SSH"):
        vm.start()
    assert len(calls) == 1
