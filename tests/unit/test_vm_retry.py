"""Vm.start boots once more after a guest that crashed before SSH, never after a timeout;
Vm.mark and Vm.end_mark bring back what one guest command printed, or None."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import VmSettings
from harness.errors import VmError
from harness.vm.control import CommandResult
from harness.vm.guestsh import STUCK_SEP
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


class _Guest:
    """Answers each command with the next canned CommandResult and keeps the commands."""

    def __init__(self, *results: CommandResult) -> None:
        self.results = list(results)
        self.cmds: list[str] = []

    def run(self, cmd: str, timeout: float) -> CommandResult:
        self.cmds.append(cmd)
        return self.results.pop(0)


def _up(tmp_path: Path, guest: _Guest, kmemleak: bool = False) -> Vm:
    vm = Vm(tmp_path / "bzImage", VmSettings(), accel=None,  # type: ignore[arg-type]
            run_dir=tmp_path, kmemleak=kmemleak)
    vm.guest = guest  # type: ignore[assignment]
    vm.running = lambda: True  # type: ignore[method-assign]
    return vm


def test_end_mark_returns_the_log_and_the_stuck_tasks_of_one_round_trip(tmp_path):
    log_text = "[ 1.0] fuse-harness-mark abc END t\n[ 1.1] later"
    out = f"{log_text}\n{STUCK_SEP}\nD 412 request_wait_answer cat /mnt/f \n\n"
    guest = _Guest(CommandResult("", 0, out, "", 0.1))
    end = _up(tmp_path, guest, kmemleak=True).end_mark("END it's")
    assert end is not None
    assert end.dmesg == log_text + "\n"
    assert end.stuck == ["D 412 request_wait_answer cat /mnt/f"]
    assert "'" not in end.marker.removeprefix("fuse-harness-mark ")  # quoted into an echo '...'
    assert end.marker in guest.cmds[0]
    assert guest.cmds[0].index("echo scan") < guest.cmds[0].index(end.marker)  # kmemleak first


@pytest.mark.parametrize("result", [CommandResult("", None, "", "", 30.0, timed_out=True),
                                    CommandResult("", None, "", "", 1.0, lost=True)])
def test_end_mark_is_none_when_the_log_did_not_come(tmp_path, result):
    guest = _Guest(result)
    assert _up(tmp_path, guest).end_mark("END t") is None
    assert "kmemleak" not in guest.cmds[0]


def test_mark_keeps_its_marker_after_a_timeout_but_not_after_a_lost_guest(tmp_path):
    guest = _Guest(CommandResult("", None, "", "", 20.0, timed_out=True),
                   CommandResult("", None, "", "", 1.0, lost=True))
    vm = _up(tmp_path, guest)
    marker = vm.mark("BEGIN t", rearm_warn_once=True)
    assert marker is not None and marker.endswith("BEGIN t") and "clear_warn_once" in guest.cmds[0]
    assert vm.mark("BEGIN u") is None
