"""A run folder read back for reporting: metadata, summary, optional bench/compare/bisect.

Pure reading and arithmetic; no rendering. Optional files and their expected shapes:

bench.json::

    {"note": "fio 3.36, 4 vCPUs, KVM",
     "workloads": {"seq-read-1M": {"unit": "MiB/s", "higher_is_better": true,
                                   "transports": {"legacy": [812.0, 830.5], "bufpool": [1204.1]}}},
     "cpu_us_per_request": {"legacy": 9.1, "bufpool": 6.2}}

compare.json::

    {"base": "results/001-v7.3-default", "head": "results/002-v7.3-default",
     "new_pass":     [{"nodeid": str, "base": verdict, "head": verdict}],
     "regressions":  [{"nodeid": str, "base": verdict, "head": verdict, "reason": str}],
     "new_findings": [{"nodeid": str, "fingerprint": str, "line": str}],
     "timing":       [{"nodeid": str, "base": seconds, "head": seconds}]}

bisect.json::

    {"good": rev, "bad": rev, "test": nodeid,
     "first_bad": {"commit": sha, "subject": str},
     "steps": [{"commit": sha, "verdict": verdict, "seconds": float}],
     "reproducer": "shell command line(s)"}

mutants.json (`fuse-harness mutate`; harness.mutate.ledger documents a record)::

    {"target": str, "scope": {"kind": "series" | "file", "text": str, ...}, "seed": int,
     "counts": {"caught": int, "survived": int, ..., "score": float | null},
     "mutants": [{"id", "operator", "location", "diff", "outcome", "caught_by", "seconds", ...}]}

known-issues.yaml (repository root)::

    - id: fuse-uring-uaf-teardown
      test: "tests/vm/test_bufpool.py::test_teardown*"   # fnmatch pattern on the nodeid
      kernel: "7.3.*"                                      # fnmatch pattern on kernel_release
      reason: "UAF in fuse_uring_req_end on abort"
      reproducer: "fuse-harness run -k teardown"

List items in compare.json may also be plain strings; renderers show what they get.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.known_issues import PATH as KNOWN_ISSUES_PATH
from harness.known_issues import KnownIssue
from harness.known_issues import load as load_known_issues

log = logging.getLogger(__name__)

#: Verdicts that make a run fail.
BAD = ("FAIL", "ERROR", "TIMEOUT", "XPASS")
#: Display order of verdicts.
ORDER = ("PASS", "FAIL", "ERROR", "TIMEOUT", "XPASS", "XFAIL", "SKIP")
#: Kernel options worth showing next to the results (prefix CONFIG_ omitted).
CONFIG_HIGHLIGHTS = (
    "FUSE_FS", "FUSE_IO_URING", "IO_URING", "FUSE_PASSTHROUGH", "KASAN", "KFENCE", "UBSAN",
    "PROVE_LOCKING", "DEBUG_ATOMIC_SLEEP", "DEBUG_KMEMLEAK", "LOCKDEP", "DEBUG_LIST", "PREEMPT",
)
#: Transports that ratio tables compare against, when the run measured them: /dev/fuse, the
#: 7.3 pool, and the posted kmbuf ring (its zero-copy claim is made against it).
BASELINES = ("legacy", "bufpool", "kmbuf")


def baselines(bench: dict[str, Any]) -> tuple[str, ...]:
    """The BASELINES this bench run measured (the columns its tables show)."""
    seen = {t for wl in (bench.get("workloads") or {}).values() for t in (wl.get("transports") or {})}
    seen |= set((bench.get("settings") or {}).get("transports") or ())
    return tuple(b for b in BASELINES if b in seen)


@dataclass
class Run:
    """Everything a report needs from one run folder; optional parts are None when absent."""

    path: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    bench: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None
    bisect: dict[str, Any] | None = None
    mutants: dict[str, Any] | None = None
    known: list[KnownIssue] = field(default_factory=list)

    @property
    def kernel(self) -> dict[str, Any]:
        return self.meta.get("kernel") or {}

    @property
    def vm(self) -> dict[str, Any]:
        return self.meta.get("vm") or {}

    @property
    def cases(self) -> list[dict[str, Any]]:
        return (self.summary or {}).get("cases", [])

    @property
    def counts(self) -> dict[str, int]:
        """Verdict counts in display order; recomputed from the cases when summary lacks them."""
        raw = (self.summary or {}).get("counts") or {}
        if not raw:
            for c in self.cases:
                raw[c["verdict"]] = raw.get(c["verdict"], 0) + 1
        return {v: raw[v] for v in (*ORDER, *sorted(set(raw) - set(ORDER))) if raw.get(v)}

    @property
    def status(self) -> str:
        """PASS, FAIL, ERROR (harness or collection error) or INCOMPLETE (no summary.json)."""
        if self.summary is None:
            status = self.meta.get("status", "INCOMPLETE")
            return "INCOMPLETE" if status == "RUNNING" else status
        if any(self.counts.get(v) for v in BAD):
            return "FAIL"
        if self.summary.get("exitstatus", 0) not in (0, None) or not self.cases:
            return "ERROR"
        return "PASS"

    @property
    def not_passing(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["verdict"] != "PASS" or c.get("findings")]

    def known_for(self, nodeid: str) -> list[KnownIssue]:
        release = self.kernel.get("kernel_release", "")
        version = ".".join(release.split("-")[0].split(".")[:2])  # 7.2.13-gb118 -> 7.2, as targets say
        target = self.kernel.get("target")
        return [k for k in self.known if k.applies(nodeid, release, target) or k.applies(nodeid, version, target)]

    def config_highlights(self) -> dict[str, str]:
        """CONFIG_ options of interest -> y/m/value or 'n' (absent when no kernel.config)."""
        path = self.path / "kernel.config"
        if not path.is_file():
            return {}
        text = path.read_text(errors="replace")
        out = {}
        for opt in CONFIG_HIGHLIGHTS:
            m = re.search(rf"^CONFIG_{opt}=(.*)$", text, re.M)
            out[opt] = m.group(1).strip('"') if m else "n"
        return out

    def reproducer_lines(self) -> list[str]:
        """reproduce.sh without its shebang and `set -e`."""
        path = self.path / "reproduce.sh"
        if not path.is_file():
            return []
        lines = path.read_text(errors="replace").splitlines()
        return [x for x in lines if not x.startswith("#!") and x.strip() != "set -e"]

    def test_command(self, nodeid: str) -> str:
        """A pytest command line that reruns one test against this run's kernel."""
        from harness.results.meta import rerun_command

        return shlex.join(rerun_command(nodeid, {**self.kernel, "accel": self.vm.get("accel")}))

    def excerpt(self, case: dict[str, Any], finding: dict[str, Any], context: int = 40) -> str:
        """The lines of the case's dmesg file around a finding ('' when the file is missing)."""
        rel = case.get("dmesg_file")
        path = self.path / rel if rel else None
        if path is None or not path.is_file():
            return ""
        from harness import dmesg

        text = path.read_text(errors="replace")
        for f in dmesg.scan(text, context):
            if f.fingerprint == finding.get("fingerprint") and f.line == finding.get("line"):
                return f.excerpt
        lines = text.splitlines()
        start = next((i for i, x in enumerate(lines) if finding.get("line") and finding["line"] in x), None)
        return "\n".join(lines[start : start + context]) if start is not None else ""


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def load(run_dir: Path, known_issues: Path | None = None) -> Run:
    """Read a run folder; raises UserError when it is not one."""
    run_dir = Path(run_dir)
    meta = _json(run_dir / "metadata.json")
    if meta is None:
        raise UserError(f"{run_dir}: no readable metadata.json, not a fuse-harness run folder",
                        "pass a folder under results/, e.g. results/001-v7.3-default")
    return Run(path=run_dir, meta=meta, summary=_json(run_dir / "summary.json"),
               bench=_json(run_dir / "bench.json"), compare=_json(run_dir / "compare.json"),
               bisect=_json(run_dir / "bisect.json"), mutants=_json(run_dir / "mutants.json"),
               known=load_known_issues(known_issues or KNOWN_ISSUES_PATH))


# -- benchmark arithmetic -------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    """Summary of repeated samples."""

    n: int
    median: float
    low: float
    high: float
    q1: float
    q3: float

    @property
    def spread_pct(self) -> float:
        """Half the min..max range as a percentage of the median (0 for one sample)."""
        return 50.0 * (self.high - self.low) / self.median if self.median else 0.0


def stats(samples: list[float]) -> Stats | None:
    values = sorted(float(x) for x in samples)
    if not values:
        return None
    q1, q3 = (statistics.quantiles(values, n=4)[i] for i in (0, 2)) if len(values) > 1 else (values[0],) * 2
    return Stats(len(values), statistics.median(values), values[0], values[-1], q1, q3)


def relative(value: float, base: float, higher_is_better: bool) -> float | None:
    """Relative performance of value against base: > 1 is better, whatever the unit's direction."""
    if not base or not value:
        return None
    return value / base if higher_is_better else base / value


def round_ratios(mine: dict[int, float], base: dict[int, float], higher_is_better: bool) -> list[float]:
    """Relative performance of mine against base in every round (1-based) both were measured in."""
    ratios = [relative(v, base[r], higher_is_better) for r, v in mine.items() if r and r in base]
    return [round(x, 4) for x in ratios if x is not None]


def _per_cpu(wl: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Each transport's samples divided by the share of the host CPU the VM got meanwhile, by round.

    Under TCG every guest cycle is a host cycle, so this (throughput per host CPU the VM used) is
    what steal time and other load do not move; higher is still better. Empty without host data.
    """
    out: dict[str, dict[int, float]] = {}
    for t, xs in (wl.get("transports") or {}).items():
        loads = (wl.get("host") or {}).get(t) or []
        rounds = (wl.get("rounds") or {}).get(t) or []
        for x, rnd, load in zip(xs, rounds, loads, strict=False):
            if rnd and load and load.get("vm"):
                out.setdefault(t, {})[rnd] = float(x) / float(load["vm"])
    return out


def _ratio_stats(ratios: list[float]) -> tuple[float | None, tuple[float, float] | None]:
    s = stats(ratios)
    return (s.median if s else None), ((s.low, s.high) if s is not None and s.n > 1 else None)


def bench_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per workload and transport: stats plus relative performance vs each baseline.

    "vs" is the median of the per-round paired ratios when bench.json has them ("paired"), else
    the ratio of the medians (older runs); "vs_range" is the (min, max) of the paired ratios (None
    with fewer than two), "ratios" the paired ratios themselves. "cpu_vs", "cpu_vs_range" and
    "cpu_ratios" are the same for throughput per host CPU the VM got (_per_cpu; None without
    host data).
    """
    rows = []
    for name, wl in (bench.get("workloads") or {}).items():
        hib = bool(wl.get("higher_is_better", True))
        medians = {t: s.median for t, xs in (wl.get("transports") or {}).items() if (s := stats(xs))}
        paired = wl.get("paired") or {}
        per_cpu = _per_cpu(wl)
        for transport, samples in (wl.get("transports") or {}).items():
            s = stats(samples)
            if s is None:
                continue
            row: dict[str, Any] = {"workload": name, "unit": wl.get("unit", ""), "higher_is_better": hib,
                                   "transport": transport, "stats": s}
            for key in ("vs", "vs_range", "ratios", "cpu_vs", "cpu_vs_range", "cpu_ratios"):
                row[key] = {}
            for b in BASELINES:
                ratios = list((paired.get(b) or {}).get(transport) or [])
                row["ratios"][b] = ratios
                row["vs"][b], row["vs_range"][b] = _ratio_stats(ratios)
                if not ratios and not paired and b in medians:
                    row["vs"][b] = relative(s.median, medians[b], hib)
                cpu = round_ratios(per_cpu.get(transport, {}), per_cpu.get(b, {}), hib)
                row["cpu_ratios"][b] = cpu
                row["cpu_vs"][b], row["cpu_vs_range"][b] = _ratio_stats(cpu)
            rows.append(row)
    return rows


def has_per_cpu(rows: list[dict[str, Any]]) -> bool:
    """True when bench_rows has ratios per host CPU (the run recorded the host's load)."""
    return any(v is not None for r in rows for v in r["cpu_vs"].values())


def harness_overhead(cases: list[dict[str, Any]]) -> str:
    """'harness per VM test: mean X s, max Y s (name)' over the cases that have the figure
    (summary.json's harness_seconds), '' when none has."""
    timed = [c for c in cases if float(c.get("harness_seconds") or 0) > 0]
    if not timed:
        return ""
    top = max(timed, key=lambda c: float(c["harness_seconds"]))
    mean = sum(float(c["harness_seconds"]) for c in timed) / len(timed)
    return (f"harness per VM test: mean {mean:.2f}s, max {float(top['harness_seconds']):.2f}s "
            f"({top['nodeid'].split('::', 1)[-1]})")
