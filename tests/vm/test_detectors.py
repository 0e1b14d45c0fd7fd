"""The kernel-log detectors fire on real kernel reports, not only on lines the harness planted.

tests/vm/test_foundation.py checks attribution and recovery with planted lines; here the kernel
itself writes the report and harness.dmesg must classify it.
"""

from __future__ import annotations

import pytest
from edge_helpers import run_edge, transports_for

from harness import dmesg


@pytest.mark.expect_dmesg("HUNG_TASK")
@pytest.mark.parametrize("ring", transports_for("hung-writer"))
def test_hung_task_is_reported(vm, request, run_dir, kernel, ring):
    """A writer stuck on the inode lock behind a WRITE the server holds: khungtaskd (timeout
    lowered to 3 s for the scenario) names it, and the harness classifies that as HUNG_TASK."""
    run_edge(vm, request, run_dir, kernel, "hung-writer", "harness: HUNG_TASK", timeout=150,
             extra=f"--transport {ring}")
    found = [f for f in dmesg.scan(vm.dmesg() or "") if f.kind == "HUNG_TASK"]
    assert found, "the guest saw a hung-task report, but harness.dmesg.scan found no HUNG_TASK finding"
    assert "blocked for more than 3 seconds" in found[-1].line
    timeout = vm.run("cat /proc/sys/kernel/hung_task_timeout_secs", timeout=20).stdout.strip()
    assert timeout not in ("", "3"), f"hung_task_timeout_secs was left at {timeout!r}"
