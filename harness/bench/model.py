"""The pure parts of `fuse-harness bench`: fio command and JSON, guest probes, bench.json, the table.

No VM and no I/O here: everything takes and returns text or dicts, so tests/unit/test_bench.py
covers it on the host. The bench.json shape is the one harness.report.data documents.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
from dataclasses import dataclass
from typing import Any

from harness.bench import hostload
from harness.errors import UserError
from harness.report.data import BASELINES, baselines, bench_rows, round_ratios

#: fio workloads in the order they run on one mount: the writes lay the files out for the reads.
FIO_WORKLOADS = (("seq-write-1M", "write"), ("rand-write-1M", "randwrite"),
                 ("seq-read-1M", "read"), ("rand-read-1M", "randread"))
#: The small-file metadata workload: one sample per phase, in operations per second.
META_WORKLOADS = (("meta-create", "create"), ("meta-stat", "stat"), ("meta-unlink", "unlink"))

FIO = "/usr/bin/fio"
#: What the series measured, against what we run under TCG (said in the output and the note).
SERIES_RECIPE = "--size=1G --ramp_time=30 on NVMe"

TCG_NOTE = ("TCG (emulated CPU) numbers show direction, not bare-metal speed; "
            "compare transports within this run only.")

#: Creates, stats, then unlinks N empty files in DIR; prints seconds per phase as JSON (stdlib only).
META_SCRIPT = r"""
import json, os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
names = [os.path.join(d, "f%d" % i) for i in range(n)]
t0 = time.monotonic()
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
t1 = time.monotonic()
for p in names:
    os.stat(p)
t2 = time.monotonic()
for p in names:
    os.unlink(p)
t3 = time.monotonic()
os.rmdir(d)
print(json.dumps({"files": n, "create": t1 - t0, "stat": t2 - t1, "unlink": t3 - t2}))
"""


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run measures (the CLI's options, validated)."""

    size: str = "64M"
    runtime: int = 10
    repeat: int = 5
    ramp: int = 2
    meta_files: int = 200
    transports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[1-9]\d*[KMGkmg]?", self.size):
            raise UserError(f"bad --size {self.size!r}", "use a fio size such as 8M, 64M or 1G")
        for name, value in (("--runtime", self.runtime), ("--repeat", self.repeat),
                            ("--meta-files", self.meta_files)):
            if value < 1:
                raise UserError(f"bad {name} {value}", f"{name} must be at least 1")
        if self.ramp < 0:
            raise UserError(f"bad --ramp {self.ramp}", "--ramp is seconds of fio warm-up, 0 or more")


def fio_args(directory: str, rw: str, s: BenchSettings) -> list[str]:
    """The series' fio recipe scaled to TCG (smaller --size, shorter ramp and runtime)."""
    return [FIO, "--name=fh-bench", f"--directory={directory}", "--ioengine=sync", "--bs=1M", "--numjobs=2",
            f"--rw={rw}", f"--size={s.size}", f"--runtime={s.runtime}", f"--ramp_time={s.ramp}", "--time_based",
            "--group_reporting", "--output-format=json"]


def fio_command(directory: str, rw: str, s: BenchSettings) -> str:
    return shlex.join(fio_args(directory, rw, s))


def scaling_line(s: BenchSettings) -> str:
    """One sentence on how the recipe was scaled, for the terminal and the note."""
    return (f"fio --ioengine=sync --bs=1M --numjobs=2 --size={s.size} --runtime={s.runtime} "
            f"--ramp_time={s.ramp} --time_based (the series used {SERIES_RECIPE})")


def parse_fio(text: str) -> dict[str, Any]:
    """Bandwidth of a fio --output-format=json run with --group_reporting.

    Returns {"mib_s", "iops", "direction", "version"}; direction is the side with traffic (read or
    write). Warnings fio prints before the JSON are skipped. Raises ValueError on anything else.
    """
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in fio output")
    data = json.loads(text[start:])
    jobs = data.get("jobs") or []
    if not jobs:
        raise ValueError("fio JSON has no jobs")
    job = jobs[0]
    best = None
    for direction in ("read", "write"):
        side = job.get(direction) or {}
        bw = side.get("bw_bytes")
        if bw is None and side.get("bw") is not None:
            bw = float(side["bw"]) * 1024  # older fio: KiB/s only
        if bw and (best is None or bw > best[1]):
            best = (direction, float(bw), float(side.get("iops") or 0.0))
    if best is None:
        raise ValueError("fio moved no data (bandwidth 0 in both directions)")
    if job.get("error"):
        raise ValueError(f"fio job error {job['error']}")
    return {"mib_s": best[1] / 1048576, "iops": best[2], "direction": best[0],
            "version": data.get("fio version", "fio")}


def parse_meta(text: str) -> dict[str, float]:
    """META_SCRIPT's output -> {"create": ops/s, "stat": ops/s, "unlink": ops/s}."""
    doc = json.loads(text.strip().splitlines()[-1])
    n = int(doc["files"])
    return {phase: n / max(float(doc[phase]), 1e-9) for _, phase in META_WORKLOADS}


def parse_cpu(stat_line: str, clk_tck: int) -> float:
    """utime + stime in seconds from one /proc/PID/stat line (all threads of the process)."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / clk_tck


def requests_of(counters: dict[str, Any]) -> int:
    """Requests the server answered, over both paths."""
    paths = counters.get("paths") or {}
    return int(paths.get("io_uring", 0)) + int(paths.get("devfuse", 0))


def server_summary(transport: str, rep: int, ready: dict[str, Any], final: dict[str, Any],
                   cpu_seconds: float) -> dict[str, Any]:
    """What one server lifetime did: path counts, data opcodes, CPU per request while measured."""
    served = requests_of(final) - requests_of(ready)
    ops = final.get("per_opcode") or {}
    return {
        "transport": transport, "rep": rep,
        "transport_used": final.get("transport_used"), "fallback": final.get("fallback"),
        "setup_error": final.get("setup_error"), "paths": final.get("paths"),
        "per_opcode": {k: ops[k] for k in ("READ", "WRITE", "CREATE", "LOOKUP", "GETATTR", "UNLINK") if k in ops},
        "zero_copy": final.get("zero_copy"), "errors_cqe_total": (final.get("errors") or {}).get("cqe_total"),
        "requests": served, "cpu_seconds": round(cpu_seconds, 3),
        "cpu_us_per_request": round(cpu_seconds / served * 1e6, 2) if served > 0 else None,
    }


def paired_ratios(samples: dict[str, list[float]], rounds: dict[str, list[int]],
                  higher_is_better: bool = True) -> dict[str, dict[str, list[float]]]:
    """Per baseline and transport, the relative performance within each round both were measured in.

    A round measures every transport back to back, so host noise that lasts longer than a round
    cancels out of these ratios; their median is what the tables call "vs <baseline>".
    """
    by_round = {t: dict(zip(rounds.get(t, []), xs, strict=False)) for t, xs in samples.items()}
    return {base: {t: round_ratios(values, by_round[base], higher_is_better) for t, values in by_round.items()}
            for base in BASELINES if base in by_round}


class BenchResult:
    """Samples as they arrive, assembled into bench.json."""

    def __init__(self, settings: BenchSettings, transports: tuple[str, ...], note: str) -> None:
        self.settings = settings
        self.transports = transports
        self.note = note
        self.workloads: dict[str, dict[str, Any]] = {}
        for name, _ in FIO_WORKLOADS:
            self.workloads[name] = {"unit": "MiB/s", "higher_is_better": True, "transports": {}}
        for name, _ in META_WORKLOADS:
            self.workloads[name] = {"unit": "ops/s", "higher_is_better": True, "transports": {}}
        self.servers: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    def add(self, workload: str, transport: str, value: float, rnd: int = 0,
            host: dict[str, float] | None = None) -> None:
        """One sample of transport in round rnd (samples of one round are paired across transports).

        host is the host's load while it ran (hostload.window), kept next to the sample.
        """
        wl = self.workloads[workload]
        wl["transports"].setdefault(transport, []).append(round(float(value), 3))
        wl.setdefault("rounds", {}).setdefault(transport, []).append(rnd)
        wl.setdefault("host", {}).setdefault(transport, []).append(host)

    def host_windows(self) -> list[dict[str, float] | None]:
        """The host load of every measured step once (the metadata phases share one step)."""
        seen: list[dict[str, float] | None] = []
        for name, wl in self.workloads.items():
            if name in (m for m, _ in META_WORKLOADS[1:]):
                continue
            for ws in (wl.get("host") or {}).values():
                seen.extend(ws)
        return seen

    def fail(self, transport: str, rep: int, step: str, detail: str) -> None:
        self.failures.append({"transport": transport, "rep": rep, "step": step, "detail": detail[-2000:]})

    def cpu_us_per_request(self) -> dict[str, float]:
        """Each transport's server CPU time per request (median if a transport had several servers)."""
        per: dict[str, list[float]] = {}
        for s in self.servers:
            if s.get("cpu_us_per_request") is not None:
                per.setdefault(s["transport"], []).append(s["cpu_us_per_request"])
        return {t: round(statistics.median(v), 2) for t, v in per.items()}

    def to_json(self) -> dict[str, Any]:
        order = {t: i for i, t in enumerate(self.transports)}
        workloads = {}
        for name, wl in self.workloads.items():
            def ordered(d: dict[str, Any]) -> dict[str, Any]:
                return dict(sorted(d.items(), key=lambda kv: order.get(kv[0], 99)))
            rounds = ordered(wl.get("rounds") or {})
            workloads[name] = {**wl, "transports": ordered(wl["transports"]), "rounds": rounds,
                               "host": ordered(wl.get("host") or {}),
                               "paired": paired_ratios(wl["transports"], rounds, wl["higher_is_better"])}
        s = self.settings
        return {
            "note": self.note,
            "workloads": workloads,
            "cpu_us_per_request": self.cpu_us_per_request(),
            "host": hostload.summary(self.host_windows()),
            "settings": {"size": s.size, "runtime": s.runtime, "ramp": s.ramp, "repeat": s.repeat,
                         "meta_files": s.meta_files,
                         "transports": list(self.transports), "fio": fio_args("MOUNT", "RW", s)},
            "servers": self.servers,
            "failures": self.failures,
        }


def make_note(settings: BenchSettings, accel: str, cpus: int, memory: str, fio_version: str, tmp_fs: str) -> str:
    tcg = TCG_NOTE if accel == "tcg" else f"{accel.upper()} guest; still a VM, not bare metal."
    return (f"{fio_version}, {cpus} vCPUs, {memory}, {accel}; {scaling_line(settings)}; "
            f"server: guest serve --backend passthrough on {tmp_fs} with FOPEN_DIRECT_IO so every read/write "
            f"reaches the transport; metadata: {settings.meta_files} files created/stat'ed/unlinked; "
            f"all transports mounted at once, {settings.repeat} round(s), each running every workload on every "
            f"transport back to back (order rotated per round); ratios are medians of the per-round ratios. {tcg}")


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"


def _ratio(value: float | None, rng: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ({rng[0]:.2f}-{rng[1]:.2f})" if rng else f"{value:.2f}"


def _order(bench: dict[str, Any], items: dict[str, Any]) -> list[str]:
    """Keys of items in the run's transport order (JSON readers may have sorted them)."""
    order = list((bench.get("settings") or {}).get("transports") or [])
    return sorted(items, key=lambda t: order.index(t) if t in order else len(order))


def table(bench: dict[str, Any]) -> str:
    """Plain text: median, min-max, relative performance vs legacy and vs bufpool (>1 is better).

    With paired samples the ratio is the median of the per-round ratios, its min-max in brackets.
    """
    bases = baselines(bench)
    heads = ["workload", "transport", "n", "median", "min-max", "unit", *(f"vs {b}" for b in bases)]
    rows = [heads]
    for r in bench_rows(bench):
        s = r["stats"]
        ratios = [_ratio(r["vs"][b], r["vs_range"][b]) for b in bases]
        rows.append([r["workload"], r["transport"], str(s.n), _fmt(s.median), f"{_fmt(s.low)}-{_fmt(s.high)}",
                     r["unit"], *ratios])
    widths = [max(len(row[i]) for row in rows) for i in range(len(heads))]
    right = {2, 3, 4}
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("-" * len(lines[0]))
    from harness.report.text import per_cpu_table

    lines += per_cpu_table(bench)
    cpu = bench.get("cpu_us_per_request") or {}
    if cpu:
        lines += ["", "server CPU time per request (whole run, us): "
                  + ", ".join(f"{t} {_fmt(cpu[t])}" for t in _order(bench, cpu))]
    lines += ["", hostload.sentence(bench.get("host"))]
    for f in bench.get("failures") or []:
        last = (f["detail"].strip().splitlines() or [""])[-1]
        lines.append(f"FAILED: {f['transport']} rep {f['rep']} at {f['step']}: {last}")
    if bench.get("note"):
        lines += ["", "Note: " + bench["note"]]
    return "\n".join(lines) + "\n"
