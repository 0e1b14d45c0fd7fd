"""How much of the host the benchmark had: steal time and other processes' CPU, per sample.

Under TCG every guest instruction is host CPU, so a sample slows down whenever something else
takes the host's CPUs: the hypervisor under this host (steal time, when the host is itself a VM)
or another process. Reading /proc/stat and the VM's processes before and after each sample says
how much of that there was, so a run can tell a steady host from a noisy one instead of printing
ranges nobody should trust. Linux only; everything is in USER_HZ ticks, as /proc reports them.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A sample is disturbed when the host lost more than this share of its CPU time to steal ...
STEAL_LIMIT_PCT = 5.0
#: ... or processes other than the VM and the harness used more than this share of it.
OTHER_LIMIT_PCT = 10.0
#: A run is noisy when more than this share of its samples were disturbed.
NOISY_SHARE = 0.10


@dataclass(frozen=True)
class Snapshot:
    """Cumulative host CPU ticks (all CPUs) at one moment."""

    total: int  # every state, idle and steal included
    busy: int  # user + nice + system + irq + softirq (guest time is inside user)
    steal: int
    ours: int  # utime + stime of the VM's process group and of this process


def _stat_line(root: Path) -> list[int]:
    for line in (root / "stat").read_text().splitlines():
        if line.startswith("cpu "):
            return [int(x) for x in line.split()[1:9]]
    raise ValueError("no cpu line in /proc/stat")


def _proc_ticks(text: str) -> tuple[int, int]:
    """(pgrp, utime + stime) from one /proc/PID/stat line."""
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[2]), int(fields[11]) + int(fields[12])


def _ours(root: Path, pgid: int | None, own: int) -> int:
    ticks = 0
    for d in root.iterdir():
        if not d.name.isdigit():
            continue
        try:
            pgrp, t = _proc_ticks((d / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        if int(d.name) == own or (pgid is not None and pgrp == pgid):
            ticks += t
    return ticks


def snapshot(pgid: int | None, root: Path = Path("/proc")) -> Snapshot | None:
    """The host's counters now; pgid is the VM's process group (vng and QEMU). None off Linux."""
    try:
        user, nice, system, idle, iowait, irq, softirq, steal = _stat_line(root)
        ours = _ours(root, pgid, os.getpid())
    except (OSError, ValueError):
        return None
    busy = user + nice + system + irq + softirq
    return Snapshot(total=busy + idle + iowait + steal, busy=busy, steal=steal, ours=ours)


def window(a: Snapshot | None, b: Snapshot | None) -> dict[str, float] | None:
    """Shares of the host's CPU time between a and b, in %: steal, other processes, the VM + harness."""
    if a is None or b is None or b.total <= a.total:
        return None
    span = b.total - a.total
    ours = b.ours - a.ours
    return {"steal": round(100 * (b.steal - a.steal) / span, 1),
            "other": round(100 * max(0, (b.busy - a.busy) - ours) / span, 1),
            "vm": round(100 * ours / span, 1)}


def disturbed(w: dict[str, float] | None) -> bool:
    return bool(w) and (w["steal"] > STEAL_LIMIT_PCT or w["other"] > OTHER_LIMIT_PCT)


def summary(windows: Iterable[dict[str, float] | None]) -> dict[str, Any] | None:
    """The run's verdict on its host: steady or noisy, with the figures behind it (None: not measured)."""
    ws = [w for w in windows if w]
    if not ws:
        return None
    bad = sum(1 for w in ws if disturbed(w))

    def fig(key: str) -> dict[str, float]:
        xs = [w[key] for w in ws]
        return {"median": round(statistics.median(xs), 1), "max": max(xs)}

    return {"verdict": "noisy" if bad > NOISY_SHARE * len(ws) else "steady", "samples": len(ws),
            "disturbed": bad, "steal": fig("steal"), "other": fig("other"), "vm": fig("vm"),
            "limits": {"steal": STEAL_LIMIT_PCT, "other": OTHER_LIMIT_PCT, "noisy_share": NOISY_SHARE}}


def sentence(host: dict[str, Any] | None) -> str:
    """One line for tables and the report: the verdict and why."""
    if not host:
        return "Host load: not measured (older run)."
    lim = host["limits"]
    figures = (f"steal median {host['steal']['median']:g}% (max {host['steal']['max']:g}%), other processes "
               f"median {host['other']['median']:g}% (max {host['other']['max']:g}%) of the host CPU")
    if host["verdict"] == "steady":
        return f"Host load: steady over {host['samples']} samples; {figures}."
    return (f"Host load: NOISY, {host['disturbed']} of {host['samples']} samples ran with steal over "
            f"{lim['steal']:g}% or other processes over {lim['other']:g}% of the host CPU; {figures}. "
            f"Throughput ratios from this run may be off by more than their ranges; the per-host-CPU "
            f"ratios cancel steal and other load: read those, or rerun on a quiet host.")
