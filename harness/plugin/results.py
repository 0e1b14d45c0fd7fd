"""pytest plugin, results half: verdicts of each test (xfail, dmesg findings, guest cases),
reproducers, and the run's outputs (summary.json, results.ktap, junit.xml, reports, the
terminal summary). Loaded by harness.plugin (`pytest_plugins`)."""

from __future__ import annotations

import logging
import re
import shlex
import shutil
from pathlib import Path

import pytest

from harness.cache import write_json_atomic
from harness.errors import HarnessError
from harness.plugin.health import expected_patterns, required_findings, unexplained
from harness.plugin.state import (
    CASES,
    CONFIG,
    DMESG_FILE,
    FINDINGS,
    HARNESS_SECONDS,
    INTERMITTENT,
    ITEMS,
    KNOWN_CASES,
    KNOWN_DMESG,
    META,
    PHASES,
    RUN_DIR,
    SUBTESTS,
    VM_OUTCOME,
    rerun_values,
)
from harness.plugin.xdist import (
    case_of,
    case_property,
    distributing,
    merge_workers,
    unused,
    worker_id,
    worker_output,
)
from harness.results import junit, ktap
from harness.results.meta import rerun_command, write_reproducer
from harness.results.model import CaseResult, Verdict, verdict_of

log = logging.getLogger("harness.plugin")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: sees the xfail verdict
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the test's dmesg findings, dmesg file and guest outcome to its report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    item.config.stash[ITEMS][item.nodeid] = item
    if report.when == "setup" and hasattr(report, "wasxfail") and call.excinfo is not None:
        # A known issue is about the kernel's behaviour inside the test, never an excuse for
        # a setup that failed (no kernel, no VM): that stays an error.
        _unxfail(report)
    if report.when != "call":
        return
    if report.passed and hasattr(report, "wasxfail") and INTERMITTENT in item.stash:
        del report.wasxfail  # an intermittent known issue that did not show: a plain pass
        report.sections.append(("known issue", f"intermittent {item.stash[INTERMITTENT]} did not show this run"))
    findings = item.stash.get(FINDINGS, [])
    expected = expected_patterns(item)
    if hasattr(report, "wasxfail"):
        other = unexplained(findings, expected + list(item.stash.get(KNOWN_DMESG, ())),
                            required_findings(item))
        if other:  # the known issue does not explain these: they fail the test
            _unxfail(report, f"{report.wasxfail}\nbut the kernel log has findings this known issue "
                             f"does not explain:\n{other}")
        from harness.known_issues import unexplained_cases

        cases = unexplained_cases(item.stash.get(KNOWN_CASES, ()), item.stash.get(SUBTESTS, []))
        if cases and hasattr(report, "wasxfail"):
            _unxfail(report, f"{report.wasxfail}\nbut guest cases this known issue does not explain "
                             f"failed:\n  " + "\n  ".join(cases))
    if findings:
        report.sections.append(("dmesg findings", "\n\n".join(f.excerpt for f in findings)))
        report.user_properties.append(("dmesg_findings", "; ".join(f.fingerprint for f in findings)))
    if DMESG_FILE in item.stash:
        report.user_properties.append(("dmesg_file", item.stash[DMESG_FILE]))
    vm_outcome = item.stash.get(VM_OUTCOME, None)
    if vm_outcome:
        report.user_properties.append(("vm_outcome", vm_outcome))
        report.sections.append(("vm", f"the guest did not survive this test: {vm_outcome}"))
    if expected and not findings and report.passed:
        report.sections.append(("dmesg", "note: expect_dmesg declared but nothing matched"))


def _unxfail(report: pytest.TestReport, why: str | None = None) -> None:
    """Turn an xfail verdict back into the failure it was (optionally saying why)."""
    del report.wasxfail
    report.outcome = "failed"
    if why is not None:
        report.longrepr = why


@pytest.hookimpl(tryfirst=True)  # in an xdist worker: before the report is sent to the controller
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record the final verdict (after xfail handling) of setup errors/skips and calls; a
    worker's verdicts reach the controller in their reports (harness.plugin.xdist)."""
    config = CONFIG.get("config")
    if config is None:
        return
    if distributing(config):
        data = case_of(report)
        if data is not None:
            config.stash[CASES].append(CaseResult.from_json(data))
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        item = config.stash[ITEMS].get(report.nodeid)
        if item is not None:
            case = _record(item, report)
            if worker_id(config) is not None:
                case_property(report, case.to_json())


def _record(item: pytest.Item, report: pytest.TestReport) -> CaseResult:
    wasxfail = hasattr(report, "wasxfail")
    timed = "Timeout" in str(report.longrepr or "") and report.failed
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
    elif report.failed:
        reason = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message
                     or report.longrepr)[:500]
    elif wasxfail:
        reason = str(report.wasxfail)
    case = CaseResult(
        nodeid=item.nodeid,
        verdict=verdict_of(report.outcome, report.when, wasxfail, timed),
        seconds=round(report.duration, 2),
        reason=reason,
        findings=[{"kind": f.kind, "line": f.line, "fingerprint": f.fingerprint}
                  for f in item.stash.get(FINDINGS, [])],
        dmesg_file=item.stash.get(DMESG_FILE, None),
        vm_outcome=item.stash.get(VM_OUTCOME, None),
        subtests=item.stash.get(SUBTESTS, []),
        harness_seconds=round(item.stash.get(HARNESS_SECONDS, 0.0), 2),
        scenario=scenario_of(item),
        transport=next((m.args[0] for m in item.iter_markers("transport") if m.args), None),
    )
    item.config.stash[CASES].append(case)
    if case.verdict in (Verdict.FAIL, Verdict.XFAIL, Verdict.TIMEOUT, Verdict.ERROR, Verdict.XPASS):
        _test_reproducer(item)
    return case


_SCENARIOS: dict[Path, dict[str, str]] = {}


def scenario_of(item: pytest.Item) -> str | None:
    """The guest edge scenario a test runs (read once per tests folder by harness.catalog from
    the tests' source: `run_edge(..., SCENARIO, ...)`), None for a test that runs none or
    when the catalog cannot read the folder (the run goes on; the report's matrix lacks it)."""
    if item.get_closest_marker("vm") is None:
        return None
    path = Path(str(getattr(item, "path", "") or item.fspath)).resolve()
    folder = path.parent
    if folder not in _SCENARIOS:
        from harness.catalog import edge_tests
        from harness.errors import UserError

        try:
            _SCENARIOS[folder] = {t.nodeid.rsplit("/", 1)[-1]: t.scenario for t in edge_tests(folder)}
        except (UserError, OSError, SyntaxError) as exc:
            log.warning("edge scenarios of %s not read: %s", folder, exc)
            _SCENARIOS[folder] = {}
    name = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    return _SCENARIOS[folder].get(f"{path.name}::{name}")


def reproducer_path(item: pytest.Item, run_dir: Path) -> Path:
    """run_dir/reproducer-<test>.sh, the one name every per-test reproducer uses."""
    return run_dir / f"reproducer-{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.name)}.sh"


def _test_reproducer(item: pytest.Item) -> None:
    """reproducer-<test>.sh: rerun this one test on the same kernel (tests that know a
    shorter guest-only command, like the edge scenarios, write their own first)."""
    run_dir = item.config.stash.get(RUN_DIR, None)
    if run_dir is None or item.get_closest_marker("vm") is None:
        return
    path = reproducer_path(item, run_dir)
    if path.exists():
        return
    cmd = rerun_command(item.nodeid, rerun_values(item.config))
    write_reproducer(run_dir, [
        f"# {item.nodeid}: rebuilds nothing when the kernel is cached; boots a guest and",
        "# runs just this test (its dmesg slice lands in the new run folder).",
        shlex.join(cmd),
    ], name=path.name)


def record_subtests(request: pytest.FixtureRequest, subtests: list[dict[str, str]]) -> None:
    """Let a test attach guest KTAP subtests (name, verdict, reason) to its report."""
    request.node.stash[SUBTESTS] = subtests


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cfg = session.config
    if RUN_DIR not in cfg.stash:
        return
    durations = dict(cfg.stash[PHASES].durations)
    if worker_id(cfg) is not None:  # the controller writes the run's files
        worker_output(cfg, cfg.stash[META].data, durations)
        return
    run_dir = cfg.stash[RUN_DIR]
    if distributing(cfg) and unused(cfg, cfg.stash[META].data):  # -n N over unit tests only: no run to record
        shutil.rmtree(run_dir, ignore_errors=True)
        del cfg.stash[RUN_DIR]
        return
    merge_workers(cfg, cfg.stash[META].data, durations)
    cases = cfg.stash[CASES]
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.verdict.value] = counts.get(c.verdict.value, 0) + 1
    write_json_atomic(run_dir / "summary.json", {"counts": counts, "exitstatus": int(exitstatus),
                                                  "cases": [c.to_json() for c in cases]})
    (run_dir / "results.ktap").write_text(ktap.render("fuse-harness", cases))
    kinfo = cfg.stash[META].data.get("kernel", {})
    junit.write(run_dir / "junit.xml", "fuse-harness", cases,
                {k: str(v) for k, v in kinfo.items() if isinstance(v, (str, int, float, bool))})
    status = "PASS" if int(exitstatus) == 0 else "FAIL"
    cfg.stash[META].finish(status, durations)
    from harness.report import render_html, render_text

    try:
        render_html(run_dir)
        (run_dir / "report.txt").write_text(render_text(run_dir))
    except HarnessError as exc:
        log.warning("report not written: %s", exc)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The kernel and VM of the run, each test that did not pass on one line, each known issue
    once (with the first line of its reason), SKIPs grouped by reason, and the run folder."""
    if RUN_DIR not in config.stash:
        return
    tr = terminalreporter
    tr.section("fuse-harness")
    meta = config.stash[META].data
    k = meta.get("kernel", {})
    if k:
        tr.write_line(f"kernel: {k.get('kernel_release')} ({k.get('target')}/{k.get('profile')}, "
                      f"{k.get('source_identity')}, build {'reused' if k.get('build_reused') else 'built'} "
                      f"in {k.get('build_seconds')}s)")
    line = vm_line(meta)
    if line:
        tr.write_line(line)
    for line in summary_lines(config.stash[CASES]):
        tr.write_line(line)
    tr.write_line(f"results: {config.stash[RUN_DIR]} (report.html, report.txt, summary.json, junit.xml, "
                  "results.ktap, dmesg/)")


_KNOWN = re.compile(r"^known issue (\S+): (.*)$", re.M)


def summary_lines(cases: list[CaseResult], width: int = 110) -> list[str]:
    """Terminal lines for the cases that did not pass: one per test, a known issue's reason once
    (under "known issues"), SKIP reasons once with their count."""
    lines, known, skips = [], {}, {}
    for c in cases:
        if c.verdict == Verdict.PASS:
            continue
        if c.verdict == Verdict.SKIP:
            skips.setdefault(c.reason.strip(), []).append(c.nodeid)
            continue
        ids = _KNOWN.findall(c.reason) if c.verdict == Verdict.XFAIL and _KNOWN.match(c.reason) else []
        extra = f" [{', '.join(f['fingerprint'] for f in c.findings)}]" if c.findings else ""
        if ids:
            for i, reason in ids:
                known.setdefault(i, reason.strip())
            lines.append(f"{c.verdict.value:7} {c.nodeid}{extra} (known issue {', '.join(i for i, _ in ids)})")
        else:
            text = c.reason.strip().splitlines() or [""]
            first = text[0] if not text[0].endswith(":") or len(text) < 2 else f"{text[0]} {text[1].strip()}"
            lines.append(f"{c.verdict.value:7} {c.nodeid}{extra} {first[:width]}")
    for reason, ids in sorted(skips.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"SKIP    {len(ids):3} test(s): {reason[:width]}")
    if known:
        lines.append("known issues:")
        lines += [f"  {i}: {r[:width]}" for i, r in known.items()]
    return lines


def ktap_subtests(text: str) -> list[dict[str, str]]:
    """Guest KTAP output as subtest dicts for record_subtests."""
    return [{"name": c.name, "verdict": c.verdict.value, "reason": c.reason} for c in ktap.parse(text)]


def vm_line(meta: dict) -> str | None:
    """The summary's `vm:` line from metadata.json's data: accelerator and why, the guests
    side by side (`-n`) with their boot seconds (the range when several booted), and the TCG
    threading; None without a guest."""
    vmi = meta.get("vm") or {}
    if not vmi:
        return None
    boot = "a kept guest, no boot" if vmi.get("adopted") else f"boot {vmi.get('boot_seconds')}s"
    workers = meta.get("workers") or {}
    boots = sorted(w["vm"]["boot_seconds"] for w in workers.values()
                   if (w.get("vm") or {}).get("boot_seconds") is not None)
    kept = sum(1 for w in workers.values() if (w.get("vm") or {}).get("adopted"))
    if len(boots) > 1 or (boots and kept):  # each worker booted its own guest, or took a kept one
        boot = f"boots {boots[0]}-{boots[-1]}s" if len(boots) > 1 else f"boot {boots[0]}s"
        boot += " and a kept guest, no boot" if kept else ""
    modes = sorted({m for w in workers.values() if (m := (w.get("vm") or {}).get("tcg_threads"))}
                   or {vmi.get("tcg_threads") or ""})
    threads = {"single": ", one TCG thread per guest", "multi": ", a TCG thread per vCPU"}.get(modes[0], "")
    if len(modes) > 1:  # a kept guest (`vm up`, one guest: a thread per vCPU) beside the workers' own
        threads = f", TCG threads per guest: {' and '.join(modes)}"
    side = f"{len(workers)} guests side by side, " if len(workers) > 1 else ""
    return f"vm: {vmi.get('accel')} ({vmi.get('accel_reason')}), {side}{boot}{threads}"
