"""Plain-text reports: a result table for a mailing-list reply, and a 0-day-bot-style summary.

ASCII only, at most 80 columns, so they survive any mail client and quoting.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from harness.bench import hostload
from harness.report import matrix
from harness.report.data import BAD, Run, baselines, bench_rows, harness_overhead, load

WIDTH = 80


def _fit(text: str, width: int = WIDTH) -> str:
    """One line of at most width columns, ASCII only."""
    text = str(text).replace("\t", "    ").replace("\n", " ").rstrip().encode("ascii", "replace").decode("ascii")
    return text if len(text) <= width else text[: width - 3] + "..."


def _nodeid(nodeid: str, width: int) -> str:
    """Shorten a long nodeid from the left (the test name matters most)."""
    if len(nodeid) <= width:
        return nodeid
    path, sep, name = nodeid.partition("::")
    nodeid = f"{path.rsplit('/', 1)[-1]}{sep}{name}"
    return nodeid if len(nodeid) <= width else "..." + nodeid[-(width - 3):]


def _field(label: str, value: Any) -> list[str]:
    """`label:   value`, wrapped at spaces; a single word longer than a line (a path) is kept whole."""
    if value in (None, ""):
        return []
    text = " ".join(str(value).split()).encode("ascii", "replace").decode("ascii")
    lines = textwrap.wrap(text, WIDTH - 10, break_long_words=False, break_on_hyphens=False) or [""]
    return [f"{label + ':':<10}{lines[0]}"] + [" " * 10 + x for x in lines[1:]]


def _shown(path: Path) -> str:
    """path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _config(run: Run) -> str:
    cfg = run.config_highlights()
    on = [f"{o}={v}" for o, v in cfg.items() if v != "n"]
    where = "kernel.config" if cfg else "no kernel.config"
    return f"{run.kernel.get('profile', '?')} profile; {' '.join(on) or where}"


def _counts(run: Run) -> str:
    return ", ".join(f"{v} {n}" for v, n in run.counts.items()) or "no tests ran"


def _time(run: Run) -> str:
    """Phases and all tests, in seconds (report.html lists the slowest tests)."""
    if not run.cases:
        return ""
    phases = [f"{k} {v:.0f}s" for k, v in (run.meta.get("durations") or {}).items() if isinstance(v, (int, float))]
    overhead = harness_overhead(run.cases)
    tests = sum(float(c.get("seconds") or 0) for c in run.cases)
    return ", ".join([*phases, f"tests {tests:.0f}s (summed over the guests)", *([overhead] if overhead else [])])


def _source(k: dict[str, Any]) -> str:
    src, ident = k.get("source"), k.get("source_identity")
    return f"{src} ({ident})" if src and ident and ident != src else src or ident or ""


def _about(k: dict[str, Any]) -> str:
    """The target's own description (what the tested tree is: a forward port, a reconstructed
    patch, ...), from targets/NAME.yaml; '' when the target is gone or unnamed."""
    from harness import config
    from harness.errors import HarnessError

    try:
        return config.load_target(k["target"]).description if k.get("target") else ""
    except (HarnessError, OSError):
        return ""


def _argv_options(meta: dict[str, Any] | None) -> dict[str, str]:
    """`--name value` and `--name=value` pairs of metadata.json's argv (the run's own command)."""
    argv, out = [str(a) for a in (meta or {}).get("argv") or []], {}
    for i, a in enumerate(argv):
        if a.startswith("--") and "=" in a:
            name, _, value = a.partition("=")
            out[name] = value
        elif a.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out[a] = argv[i + 1]
    return out


def _series(k: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """The applied series (with its identity); for a run that stopped before its kernel was
    known, the series its command asked for (from metadata.json's argv), else 'none'."""
    if not k.get("series"):
        asked = _argv_options(meta).get("--series")
        if asked:
            return f"{asked} (not applied: the run stopped before its kernel was built)"
        return "none (base kernel)"
    return f"{k['series']} ({k['series_identity']})" if k.get("series_identity") else str(k["series"])


def _vm(run: Run) -> str:
    vm = run.vm
    if not vm:
        return ""
    boot = f", boot {vm['boot_seconds']}s" if vm.get("boot_seconds") is not None else ""
    if vm.get("adopted"):
        boot = ", a kept guest (no boot)"
    return f"{str(vm.get('accel', '?')).upper()} ({vm.get('accel_reason', '')}){boot}"


def _failures(run: Run) -> list[str]:
    """The tests that did not pass, one block each: verdict, id, time; the failure's reason
    wrapped (at most four lines); findings; the known issues it names (their reasons come once,
    in the known-issues section). Skipped tests come last, one line per reason with a count."""
    out, skips = [], {}
    for c in run.not_passing:
        if c["verdict"] == "SKIP" and not c.get("findings"):
            skips.setdefault(" ".join((c.get("reason") or "no reason").split()), []).append(c["nodeid"])
            continue
        secs = f" ({c['seconds']:.1f}s)" if isinstance(c.get("seconds"), (int, float)) else ""
        out.append(f"  {c['verdict']:<8}{_nodeid(c['nodeid'], WIDTH - 10 - len(secs))}{secs}")
        known = run.known_for(c["nodeid"])
        if c.get("reason") and not (known and c["verdict"] in ("XFAIL", "XPASS")):
            out += textwrap.wrap(" ".join(c["reason"].split()), WIDTH, initial_indent=" " * 10,
                                 subsequent_indent=" " * 10, max_lines=4, placeholder=" [...]")
        if c.get("vm_outcome"):
            out.append(_fit(f"          guest: {c['vm_outcome']}"))
        for f in c.get("findings") or []:
            out.append(_fit(f"          finding: {f.get('fingerprint')}"))
        for k in known:
            out.append(_fit(f"          known issue: {k.id}"))
    for reason, ids in sorted(skips.items(), key=lambda kv: -len(kv[1])):
        out += textwrap.wrap(f"SKIP    {len(ids)} test(s): {reason}", WIDTH, initial_indent="  ",
                             subsequent_indent=" " * 10)
    return out


def _vs(value: float | None, rng: tuple[float, float] | None) -> str:
    """`1.35 (1.20-1.50)`: the median ratio and the min..max over rounds when paired ratios exist."""
    if value is None:
        return "-"
    return f"{value:.2f} ({rng[0]:.2f}-{rng[1]:.2f})" if rng else f"{value:.2f}"


def _spread(pct: float) -> str:
    """The +- column, 4 wide: ` 12%`, or ` >99` for a spread of 100% or more (it would shift the row)."""
    return f"{pct:>3.0f}%" if pct < 99.5 else " >99"


def per_cpu_table(bench: dict[str, Any]) -> list[str]:
    """The ratios again, of each sample divided by the host CPU share the VM got meanwhile, 80 columns.

    Empty for runs without host load data. Under TCG this cancels steal time and other load.
    """
    rows = [r for r in bench_rows(bench) if any(v is not None for v in r["cpu_vs"].values())]
    if not rows:
        return []
    bases = baselines(bench)
    out = ["", *textwrap.wrap("Per host CPU: the same ratios of throughput divided by the share of the "
                              "host's CPU the VM got during each sample. Under TCG every guest cycle is a "
                              "host cycle, so steal time and other load cancel out; >1 is better.", WIDTH),
           f"{'workload':<14}{'transport':<19}" + "".join(f"{'vs ' + b:<17}" for b in bases).rstrip(),
           "-" * WIDTH]
    for r in rows:
        ratios = "".join(f"{_vs(r['cpu_vs'][b], r['cpu_vs_range'][b]):<17}" for b in bases).rstrip()
        out.append(_fit(f"{r['workload'][:13]:<14}{r['transport'][:18]:<19}{ratios}"))
    return out


def bench_table(run: Run) -> list[str]:
    """Medians, their spread, and relative performance (>1 better) vs legacy and bufpool (or
    kmbuf on a kmbuf kernel), 80 columns."""
    if not run.bench:
        return []
    bases = baselines(run.bench)
    paired = any(wl.get("paired") for wl in (run.bench.get("workloads") or {}).values())
    out = ["Benchmarks: median of n samples, MiB/s (fio) or ops/s (meta-*); +- = half the",
           "min..max range of the samples in % of the median; vs = relative performance",
           (">1 is better: median of the per-round ratios (min-max over the rounds)" if paired
            else ">1 is better: ratio of the medians"),
           f"{'workload':<14}{'transport':<19}{'n':>2}{'median':>7}{'+-':>4} "
           + "".join(f"{'vs ' + b:<17}" for b in bases).rstrip()]
    out.append("-" * WIDTH)
    for r in bench_rows(run.bench):
        s = r["stats"]
        ratios = "".join(f"{_vs(r['vs'][b], r['vs_range'][b]):<17}" for b in bases).rstrip()
        median = f"{s.median:.4g}" if s.median < 1000 else f"{s.median:.0f}"
        out.append(_fit(f"{r['workload'][:13]:<14}{r['transport'][:18]:<19}{s.n:>2}{median:>7}"
                        f"{_spread(s.spread_pct)} {ratios}"))
    out += per_cpu_table(run.bench)
    cpu = run.bench.get("cpu_us_per_request") or {}
    if cpu:
        out += textwrap.wrap("Server CPU time per request (us): " + ", ".join(f"{t} {float(v):.0f}"
                                                                             for t, v in cpu.items()), WIDTH)
    out += textwrap.wrap(hostload.sentence(run.bench.get("host")), WIDTH)
    if run.bench.get("note"):
        out += textwrap.wrap("Note: " + run.bench["note"], WIDTH)
    return out


def _known_section(run: Run) -> list[str]:
    """Each known issue an expected failure of this run names: why, and how to reproduce it
    (for a posted series, its review findings)."""
    seen: dict[str, Any] = {}
    for c in run.cases:
        if c["verdict"] in ("XFAIL", "XPASS"):
            for k in run.known_for(c["nodeid"]):
                seen.setdefault(k.id, (k, []))[1].append(c["nodeid"])
    out: list[str] = []
    for k, ids in seen.values():
        out += ["", _fit(f"[{k.id}]"), *(_fit(f"  in {_nodeid(i, WIDTH - 5)}") for i in ids)]
        out += textwrap.wrap(" ".join(k.reason.split()), WIDTH, initial_indent="  ", subsequent_indent="  ")
        if k.reproducer:
            out += textwrap.wrap("reproduce: " + " ".join(k.reproducer.split()), WIDTH, initial_indent="  ",
                                 subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
    return ["", "Known issues (expected failures, each with its reproducer):", *out] if out else []


def render_text(run_dir: Path, known_issues: Path | None = None) -> str:
    """A short result table fit for a reply on a mailing list."""
    run = load(Path(run_dir), known_issues)
    k = run.kernel
    lines = [_fit(f"fuse-harness {run.meta.get('harness_version', '')} run {run.path.name}: {run.status}"), ""]
    asked = _argv_options(run.meta)
    lines += _field("kernel", f"{k.get('kernel_release', '?')} ({k.get('target') or asked.get('--target', '?')}/"
                              f"{k.get('profile') or asked.get('--profile', '?')})")
    lines += _field("tested", _about(k))
    lines += _field("source", _source(k))
    lines += _field("series", _series(k, run.meta))
    lines += _field("config", _config(run))
    lines += _field("compiler", k.get("compiler"))
    lines += _field("vm", _vm(run))
    lines += _field("results", _counts(run))
    lines += _field("time", _time(run))
    if run.meta.get("error") and not run.cases:
        lines += ["", "Stopped before any test:"]
        lines += textwrap.wrap(" ".join(str(run.meta["error"]).split()), WIDTH, initial_indent="  ",
                               subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    bad = _failures(run)
    if bad:
        lines += ["", "Not passing (or with kernel log findings):", *bad]
    lines += _known_section(run)
    lines += matrix.text(run, WIDTH)
    if run.bisect and (run.bisect.get("first_bad") or {}).get("commit"):
        fb = run.bisect["first_bad"]
        lines += ["", _fit(f"First bad commit: {fb['commit'][:12]} {fb.get('subject', '')}")]
    table = bench_table(run)
    if table:
        lines += ["", *table]
    return "\n".join(lines) + "\n"


def _first_finding(run: Run) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for c in run.cases:
        for f in c.get("findings") or []:
            return c, f
    return None


def render_0day(run_dir: Path, known_issues: Path | None = None) -> str:
    """A kernel-test-robot-style summary: tree, series, config, compiler, reproduce, first splat."""
    run = load(Path(run_dir), known_issues)
    k = run.kernel
    bad = [c for c in run.cases if c["verdict"] in BAD]
    nfind = sum(len(c.get("findings") or []) for c in run.cases)
    lines = ["Hi,", ""]
    lines += textwrap.wrap(
        f"fuse-harness, an automated FUSE-over-io-uring test harness (not a person), tested the kernel below: "
        f"{run.status}, {len(bad)} failing test(s) and {nfind} kernel log finding(s) ({_counts(run)}).", WIDTH)
    lines.append("")
    lines += _field("tree", _source(k) or "?")
    lines += _field("base", k.get("kernel_release"))
    lines += _field("series", _series(k, run.meta))
    fb = (run.bisect or {}).get("first_bad") or {}
    if fb.get("commit"):
        lines += _field("commit", f"{fb['commit'][:12]} (\"{fb.get('subject', '')}\")")
    lines += _field("config", f"{_shown(run.path / 'kernel.config')} ({_config(run)})")
    lines += _field("compiler", k.get("compiler") or "?")
    lines += _field("vm", _vm(run))
    repro = run.reproducer_lines()
    if repro:
        lines += ["", "reproduce:"] + [_fit("        " + x) for x in repro]
    if bad:
        lines += ["", "failing tests:"] + [f"        {c['verdict']:<8}{_nodeid(c['nodeid'], WIDTH - 16)}" for c in bad]
    lines += ["", "If you fix the issue in a separate patch/commit (i.e. not just a new version",
              "of the same patch/commit), kindly add following tags where applicable",
              "(placeholders: this report comes from a test harness, not a bot or a person):",
              "| Reported-by: fuse-harness <REPLACE-WITH-YOUR-ADDRESS>",
              "| Closes: <REPLACE-WITH-LINK-TO-THIS-REPORT>"]
    first = _first_finding(run)
    if first:
        case, finding = first
        lines += ["", _fit(f"first kernel log finding, {finding.get('fingerprint')}, in"),
                  _fit(f"{_nodeid(case['nodeid'], WIDTH - 1)}:"), ""]
        excerpt = run.excerpt(case, finding) or finding.get("line", "")
        lines += [_fit(x) for x in excerpt.splitlines()]
    elif bad and bad[0].get("reason"):
        lines += ["", "first failure, in", _fit(f"{_nodeid(bad[0]['nodeid'], WIDTH - 1)}:"), ""]
        lines += [_fit(x) for x in bad[0]["reason"].splitlines()[:20]]
    return "\n".join(lines) + "\n"
