"""Compare two runs: new passes, regressions, new dmesg findings, one-sided tests, timings, benchmarks.

    fuse-harness compare RUN_A RUN_B                          # two existing run folders (suite or bench)
    fuse-harness compare --base-target v7.2 --head-target v7.3 [-k EXPR]   # run both, then compare

`compare()` is pure (reads summary.json/metadata.json of both folders); `save()` writes
compare.json (the shape harness.report renders, see harness.report.data) and compare.txt
into the head run folder. A test that SKIPs on the base (its transport is not promised
there) and PASSes on the head is a new pass: that is how 7.3's new transports show up.
A posted series run against the landed form pairs transports across generations (a head
test `X[kmbuf]` is compared with the base's `X[bufpool]`, see PAIRS), case by case.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import config
from harness.cache import write_json_atomic
from harness.errors import InfraError, UserError

log = logging.getLogger(__name__)

#: Head verdicts that turn a base PASS into a regression.
REGRESSED = ("FAIL", "ERROR", "TIMEOUT")
#: Timings are compared only when both runs took longer than this (seconds)...
TIMING_FLOOR = 1.0
#: ...and differ by at least this factor either way.
TIMING_RATIO = 1.5
#: Head transport -> the base transport its test ids are compared with when the base run
#: has no test of that transport: the posted kmbuf (D) and bufring (B) series against 7.3 (C).
PAIRS = {"kmbuf": "bufpool", "kmbuf-zero-copy": "zero-copy", "bufring": "bufpool"}
_PARAM = re.compile(r"\[([^\]]+)\]$")


def pair_ids(base: dict[str, Any], head: dict[str, Any], pairs: dict[str, str]) -> dict[str, str]:
    """{head nodeid: base nodeid} for head tests whose transport parameter maps to a base
    transport (only when the head ran it and the base did not run the head's own id: absent,
    or skipped because its target does not promise that transport; two runs of one target
    skip the same transports and pair nothing)."""
    out = {}
    for n in head:
        m = _PARAM.search(n)
        ran = (head.get(n) or {}).get("verdict", "SKIP") != "SKIP"
        if m and ran and m.group(1) in pairs and (base.get(n) or {}).get("verdict", "SKIP") == "SKIP":
            other = n[:m.start()] + f"[{pairs[m.group(1)]}]"
            if other in base:
                out[n] = other
    return out


def _read(run: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((run / name).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{run / name} is unreadable: {exc}") from None


def load_cases(run: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({nodeid: case}, metadata) of a run folder; UserError when it has no summary.json."""
    summary = _read(run, "summary.json")
    if summary is None:
        hint = "the run did not finish (see its metadata.json)" if (run / "metadata.json").is_file() \
            else "pass a run folder under results/, e.g. results/001-v7.3-default"
        raise UserError(f"{run}: no summary.json, cannot compare it", hint)
    cases = {c["nodeid"]: c for c in summary.get("cases", []) if "nodeid" in c}
    return cases, _read(run, "metadata.json") or {}


def _label(run: Path, meta: dict[str, Any]) -> dict[str, Any]:
    k = meta.get("kernel") or {}
    return {"path": str(run), "target": k.get("target"), "kernel_release": k.get("kernel_release"),
            "source_identity": k.get("source_identity"), "series": k.get("series")}


def compare(base_run: Path, head_run: Path, ratio: float = TIMING_RATIO,
            pairs: dict[str, str] | None = None) -> dict[str, Any]:
    """The differences between two run folders as the compare.json dict (`pairs`: head
    transport -> base transport for tests only the head has, default PAIRS).

    Test verdicts when both have summary.json, benchmark ratios when both have bench.json
    (harness.bench.compare); two bench runs of the same kernel are the reproducibility check.
    """
    from harness.bench.compare import compare_bench

    base_bench, head_bench = _read(Path(base_run), "bench.json"), _read(Path(head_run), "bench.json")
    bench_only = bool(base_bench and head_bench) and not (Path(base_run) / "summary.json").is_file()
    if bench_only:  # two `fuse-harness bench` folders: no test verdicts to compare
        base, head = {}, {}
        base_meta, head_meta = (_read(Path(r), "metadata.json") or {} for r in (base_run, head_run))
    else:
        base, base_meta = load_cases(Path(base_run))
        head, head_meta = load_cases(Path(head_run))
    paired = pair_ids(base, head, PAIRS if pairs is None else pairs)
    base_of = {**{n: n for n in head if n in base}, **paired}
    both = [n for n in head if n in base_of]
    new_pass, regressions, changed, timing = [], [], [], []
    for n in both:
        b, h = base[base_of[n]], head[n]
        bv, hv = b.get("verdict"), h.get("verdict")
        if hv == "PASS" and bv != "PASS":
            new_pass.append({"nodeid": n, "base": bv, "head": hv})
        elif bv == "PASS" and hv in REGRESSED:
            regressions.append({"nodeid": n, "base": bv, "head": hv, "reason": h.get("reason", "")})
        elif bv != hv:
            changed.append({"nodeid": n, "base": bv, "head": hv, "reason": h.get("reason", "")})
        bs, hs = float(b.get("seconds") or 0), float(h.get("seconds") or 0)
        if bs > TIMING_FLOOR and hs > TIMING_FLOOR and max(bs / hs, hs / bs) >= ratio:
            timing.append({"nodeid": n, "base": bs, "head": hs, "ratio": round(hs / bs, 2),
                           "delta": round(hs - bs, 2)})
    seen = {f.get("fingerprint") for c in base.values() for f in c.get("findings") or []}
    new_findings, listed = [], set()
    for n, c in head.items():
        for f in c.get("findings") or []:
            fp = f.get("fingerprint")
            if fp not in seen and (n, fp) not in listed:
                listed.add((n, fp))
                new_findings.append({"nodeid": n, "fingerprint": fp, "line": f.get("line", ""),
                                     "kind": f.get("kind", "")})
    timing.sort(key=lambda t: -max(t["ratio"], 1 / t["ratio"]))
    return {
        "base": str(base_run), "head": str(head_run),
        "base_kernel": _label(Path(base_run), base_meta), "head_kernel": _label(Path(head_run), head_meta),
        "new_pass": new_pass, "regressions": regressions, "new_findings": new_findings, "timing": timing,
        "changed": changed, "tests_compared": not bench_only,
        "phases": phase_seconds(base_meta, base, head_meta, head),
        "paired": [{"nodeid": n, "base_nodeid": b} for n, b in paired.items()],
        "only_base": [{"nodeid": n, "verdict": c.get("verdict")} for n, c in base.items()
                      if n not in head and n not in paired.values()],
        "only_head": [{"nodeid": n, "verdict": c.get("verdict")} for n, c in head.items() if n not in base_of],
        **({"bench": compare_bench(base_bench, head_bench)} if base_bench and head_bench else {}),
    }


def _wall(meta: dict[str, Any]) -> float | None:
    from datetime import datetime

    try:
        t0, t1 = (datetime.fromisoformat(meta[k].replace("Z", "+00:00")) for k in ("started", "finished"))
    except (KeyError, ValueError, AttributeError):
        return None
    return (t1 - t0).total_seconds()


def phase_seconds(base_meta: dict[str, Any], base: dict[str, Any], head_meta: dict[str, Any],
                  head: dict[str, Any]) -> list[dict[str, Any]]:
    """Where each run's time went, side by side: [{phase, base, head, ratio}] in seconds for
    the phases metadata.json records (source, series, build, boot, ...), the sum of the
    tests' own seconds ("tests") and start to finish ("wall"); phases only one run has are
    listed with None on the other side."""
    def table(meta: dict[str, Any], cases: dict[str, Any]) -> dict[str, float]:
        out = {k: float(v) for k, v in (meta.get("durations") or {}).items() if isinstance(v, (int, float))}
        if cases:
            out["tests"] = round(sum(float(c.get("seconds") or 0) for c in cases.values()), 1)
        wall = _wall(meta)
        if wall is not None:
            out["wall"] = wall
        return out

    b, h = table(base_meta, base), table(head_meta, head)
    rows = []
    for phase in [*b, *(k for k in h if k not in b)]:
        bs, hs = b.get(phase), h.get(phase)
        ratio = round(hs / bs, 2) if bs and hs is not None and bs > 0 else None
        rows.append({"phase": phase, "base": bs, "head": hs, "ratio": ratio})
    return rows


def _short(nodeid: str) -> str:
    return nodeid.removeprefix("tests/vm/")


def render(result: dict[str, Any]) -> str:
    """A plain-text table of the differences (what the terminal and compare.txt show)."""
    def who(side: str) -> str:
        k = result.get(f"{side}_kernel") or {}
        extra = ", ".join(str(x) for x in (k.get("target"), k.get("kernel_release")) if x)
        return f"{result[side]}" + (f" ({extra})" if extra else "")

    lines = [f"base: {who('base')}", f"head: {who('head')}", ""]
    pairs = sorted({(_PARAM.search(p["nodeid"]).group(1), _PARAM.search(p["base_nodeid"]).group(1))
                    for p in result.get("paired") or []})
    if pairs:
        lines[-1:] = [f"paired across transports (head ~ base): {', '.join(f'{h} ~ {b}' for h, b in pairs)} "
                      f"({len(result['paired'])} tests)", ""]
    sections = (
        ("regressions", lambda x: f"{x['base']:>7} -> {x['head']:<7} {_short(x['nodeid'])}  {x['reason'][:80]}"),
        ("new_findings", lambda x: f"{x.get('kind', ''):>7}    {_short(x['nodeid'])}  {x['fingerprint']}"),
        ("new_pass", lambda x: f"{x['base']:>7} -> {x['head']:<7} {_short(x['nodeid'])}"),
        ("changed", lambda x: f"{x['base']:>7} -> {x['head']:<7} {_short(x['nodeid'])}  {x['reason'][:80]}"),
        ("only_base", lambda x: f"{x['verdict']:>7}    {_short(x['nodeid'])}"),
        ("only_head", lambda x: f"{x['verdict']:>7}    {_short(x['nodeid'])}"),
        ("timing", lambda x: f"{x['base']:6.1f}s -> {x['head']:6.1f}s ({x['ratio']:.2f}x, "
                             f"{x['head'] - x['base']:+.1f}s) {_short(x['nodeid'])}"),
    )
    titles = {"regressions": "regressions (PASS on base, failing on head)", "new_findings": "new kernel log findings",
              "new_pass": "new passes", "changed": "other verdict changes", "only_base": "only in base",
              "only_head": "only in head", "timing": f"timing changes (>= {TIMING_RATIO}x, both > {TIMING_FLOOR:g}s)"}
    for key, fmt in sections if result.get("tests_compared", True) else ():
        items = result.get(key) or []
        lines.append(f"{titles[key]}: {len(items) or 'none'}")
        lines += [f"  {fmt(x)}" for x in items]
    rows = result.get("phases") or []
    if rows:
        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}s"

        lines.append("time per phase (base -> head):")
        lines += [f"  {r['phase']:8} {sec(r['base']):>9} -> {sec(r['head']):>9}"
                  + (f"  ({r['ratio']:.2f}x)" if r.get("ratio") is not None else "") for r in rows]
    if result.get("bench"):
        from harness.bench.compare import render as render_bench

        lines += ([""] if len(lines) > 3 else []) + render_bench(result["bench"])
    return "\n".join(lines) + "\n"


def save(result: dict[str, Any], folder: Path) -> Path:
    """compare.json (+ compare.txt) in folder; returns the JSON path."""
    path = Path(folder) / "compare.json"
    write_json_atomic(path, result)
    (Path(folder) / "compare.txt").write_text(render(result))
    return path


# -- running the suite on both targets -------------------------------------------------
def suite_argv(target: str, profile: str, results_dir: str, k: str | None = None, accel: str | None = None,
               extra: list[str] | None = None) -> list[str]:
    """The pytest arguments `fuse-harness run` uses, for one target."""
    argv = ["tests/vm", "-p", "no:cacheprovider", "--results-dir", results_dir, "--target", target,
            "--profile", profile]
    if accel:
        argv += ["--accel", accel]
    if k:
        argv += ["-k", k]
    return argv + list(extra or [])


def run_suite(argv: list[str]) -> Path:
    """Run pytest in a subprocess (output passed through); return the run folder it made."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *argv], cwd=config.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    folder = None
    for line in proc.stdout:
        sys.stdout.write(line)
        if m := re.match(r"results: (\S+) \(", line):
            folder = Path(m.group(1))
    rc = proc.wait()
    if folder is None or not (folder / "summary.json").is_file():
        raise InfraError(f"pytest {' '.join(argv)} exited {rc} without a finished run folder",
                         "see its output above; `fuse-harness run` with the same target shows the same")
    return folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="two run folders: base then head")
    p.add_argument("--base-target", help="run the VM suite on this target as the base (e.g. v7.2)")
    p.add_argument("--head-target", help="... and on this one as the head (e.g. v7.3)")
    p.add_argument("--profile", default="default", choices=sorted(config.PROFILES), help="kconfig profile")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--results-dir", default=str(Path.cwd() / "results"))
    p.add_argument("-k", default=None, help="only tests matching this pytest expression")
    p.add_argument("--json", action="store_true", help="print compare.json instead of the table")


def run(args: argparse.Namespace) -> int:
    """`fuse-harness compare`: 0 when the head has no regressions or new findings, 1 otherwise."""
    if args.runs and (args.base_target or args.head_target):
        raise UserError("give either two run folders or --base-target/--head-target, not both")
    if args.runs:
        if len(args.runs) != 2:
            raise UserError(f"compare needs two run folders (base, head), got {len(args.runs)}")
        base, head = args.runs
    elif args.base_target and args.head_target:
        runs = []
        from harness.kernel import preflight

        for target in (args.base_target, args.head_target):  # bad input fails before any build
            preflight(config.load_target(target), args.profile)
        for target in (args.base_target, args.head_target):
            log.info("compare: running the suite on %s", target)
            runs.append(run_suite(suite_argv(target, args.profile, args.results_dir, args.k, args.accel)))
        base, head = runs
    else:
        raise UserError("nothing to compare", "pass RUN_A RUN_B, or --base-target T1 --head-target T2")
    result = compare(base, head)
    path = save(result, head)
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json else render(result))
    print(f"written: {path} (and compare.txt; `fuse-harness report {head}` shows it)")
    return 1 if result["regressions"] or result["new_findings"] else 0  # moved benchmarks are news, not failures
