"""harness.bench.hostload on a fake /proc: who used the host's CPU while a sample ran."""

from __future__ import annotations

import os
from pathlib import Path

from harness.bench import hostload as H


def fake_proc(root: Path, cpu: list[int], procs: dict[int, tuple[int, int]]) -> Path:
    """cpu: user nice system idle iowait irq softirq steal; procs: pid -> (pgrp, ticks)."""
    root.mkdir(exist_ok=True)
    (root / "stat").write_text("cpu  " + " ".join(map(str, [*cpu, 0, 0])) + "\ncpu0 1 2 3\nintr 5\n")
    for pid, (pgrp, ticks) in procs.items():
        (root / str(pid)).mkdir(exist_ok=True)
        # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        (root / str(pid) / "stat").write_text(f"{pid} (qemu (x) y) S 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 {ticks} 0 0 0\n")
    (root / "self").mkdir(exist_ok=True)  # not a pid: ignored
    return root


def test_snapshot_counts_the_vm_group_and_this_process(tmp_path):
    root = fake_proc(tmp_path / "p", [100, 0, 20, 50, 5, 1, 2, 7], {10: (10, 30), 11: (10, 40), 12: (99, 500),
                                                                    os.getpid(): (1, 3)})
    snap = H.snapshot(10, root)
    assert snap == H.Snapshot(total=185, busy=123, steal=7, ours=73)
    assert H.snapshot(10, tmp_path / "missing") is None


def test_window_splits_steal_other_and_vm():
    a = H.Snapshot(total=1000, busy=500, steal=10, ours=400)
    b = H.Snapshot(total=2000, busy=1400, steal=110, ours=1200)  # 1000 ticks: 100 steal, 900 busy, 800 ours
    assert H.window(a, b) == {"steal": 10.0, "other": 10.0, "vm": 80.0}
    assert H.disturbed(H.window(a, b))  # steal over 5%
    assert H.window(b, a) is None and H.window(None, b) is None
    quiet = H.Snapshot(total=2000, busy=1300, steal=20, ours=1150)
    assert H.window(a, quiet) == {"steal": 1.0, "other": 5.0, "vm": 75.0} and not H.disturbed(H.window(a, quiet))


def test_summary_calls_a_run_noisy_past_one_sample_in_ten():
    calm, busy = {"steal": 0.5, "other": 2.0, "vm": 95.0}, {"steal": 0.0, "other": 40.0, "vm": 60.0}
    steady = H.summary([calm] * 18 + [busy] * 2 + [None])
    assert steady["verdict"] == "steady" and steady["samples"] == 20 and steady["disturbed"] == 2
    assert steady["other"] == {"median": 2.0, "max": 40.0}
    noisy = H.summary([calm] * 17 + [busy] * 3)
    assert noisy["verdict"] == "noisy"
    assert "NOISY, 3 of 20 samples" in H.sentence(noisy) and "rerun on a quiet host" in H.sentence(noisy)
    assert H.sentence(steady).startswith("Host load: steady over 20 samples")
    assert H.summary([None]) is None and "not measured" in H.sentence(None)
