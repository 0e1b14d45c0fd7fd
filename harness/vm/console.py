"""Classify how a boot or a guest command ended, from exit status and console text."""

from __future__ import annotations

import re
from enum import StrEnum


class Outcome(StrEnum):
    """How a VM run ended."""

    PASSED = "passed"
    FAILED = "failed"
    PANIC = "kernel-panic"
    TIMEOUT = "timeout"
    BOOT_FAILURE = "boot-failure"


_PANIC = re.compile(r"Kernel panic - not syncing|end Kernel panic")
#: Lines that show user space was reached (virtme-ng-init or the bash init ran).
_BOOTED = re.compile(r"virtme-ng-init:|virtme-init:|Run /init as init process|Freeing unused kernel")


def classify(returncode: int | None, console: str, timed_out: bool) -> tuple[Outcome, str]:
    """The outcome and a one-line reason."""
    panic = _PANIC.search(console)
    if panic:
        line = next((x for x in console.splitlines() if "Kernel panic" in x), panic.group(0))
        return Outcome.PANIC, line.strip()
    if not _BOOTED.search(console):
        if timed_out:
            return Outcome.BOOT_FAILURE, "no sign of user space before the timeout"
        return Outcome.BOOT_FAILURE, f"vng exited {returncode} before user space started"
    if timed_out:
        return Outcome.TIMEOUT, "the guest command did not finish in time (hang?)"
    if returncode == 0:
        return Outcome.PASSED, "exit 0"
    return Outcome.FAILED, f"exit {returncode}"
