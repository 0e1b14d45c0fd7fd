"""pytest plugin, per-test half: each VM test's dmesg slice, its findings and the guest's
health around it (harness.plugin.session holds the options, the session's kernel and guest).

Between two markers written into the guest's kernel log, a test's slice is scanned
(harness.dmesg); a finding not declared with expect_dmesg or expect_kernel_finding fails the
test, and so does the absence of a finding expect_kernel_finding requires. A guest that dies
during a test is classified (panic, hang, died), the test fails, and the next test gets a
fresh guest; so does the next test after an oops-like finding (TAINTING) or after a test
that may leave the guest wedged (fresh_guest_after, a task left in D state).
harness.plugin.results imports it before pytest loads it as a plugin, so it opts out of
assertion rewriting (it has no asserts to rewrite): PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import logging
import re
import time

import pytest

from harness import dmesg
from harness.cache import safe_name
from harness.errors import HarnessError
from harness.plugin.state import DMESG_FILE, FINDINGS, GUEST, HARNESS_SECONDS, RUN_DIR, VM_OUTCOME
from harness.plugin.xdist import worker_id

log = logging.getLogger("harness.plugin")
#: Finding kinds after which the guest is rebooted before the next test (state may be corrupt).
TAINTING = ("OOPS", "BUG", "PANIC", "KASAN", "KFENCE", "LIST_CORRUPTION")
#: The kinds a finding of a test can have: the classifier's (harness.dmesg.PATTERNS) and the
#: plugin's own STUCK_TASK (a user task left in D state); what expect_kernel_finding may name.
KINDS = (*(kind for kind, _ in dmesg.PATTERNS), "STUCK_TASK")
#: In an xdist worker: the error of the test's bad expect_kernel_finding mark.
_BAD_MARK = pytest.StashKey[str]()


def expected_patterns(item: pytest.Item) -> list[str]:
    """The regexes of the test's expect_dmesg marks (findings they match are not failures)."""
    patterns: list[str] = []
    for mark in item.iter_markers("expect_dmesg"):
        patterns.extend(mark.args)
    return patterns


def required_findings(item: pytest.Item) -> list[tuple[str, str]]:
    """(kind, regex) of each expect_kernel_finding(kind, pattern) mark of the test: a finding
    of that kind whose line or fingerprint the regex matches (re.search) must be in the test's
    own kernel-log slice. pytest.UsageError for a mark that is not two arguments, one of
    KINDS and a valid regex."""
    required: list[tuple[str, str]] = []
    for mark in item.iter_markers("expect_kernel_finding"):
        where = f"{item.nodeid}: expect_kernel_finding"
        if len(mark.args) != 2 or mark.kwargs or not all(isinstance(a, str) for a in mark.args):
            got = ", ".join([*map(repr, mark.args), *(f"{k}={v!r}" for k, v in mark.kwargs.items())])
            raise pytest.UsageError(f"{where} takes two strings, (kind, pattern), got ({got})")
        kind, pattern = mark.args
        if kind not in KINDS:
            raise pytest.UsageError(f"{where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise pytest.UsageError(f"{where}: pattern {pattern!r} is not a regex: {exc}") from None
        required.append((kind, pattern))
    return required


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every expect_kernel_finding mark before any test runs (bad input: a UsageError).
    In an xdist worker a UsageError here would reach the controller as an INTERNALERROR without
    its message (harness.plugin.xdist.stop_session): there the test is kept, and fails at setup
    with the message and stops the session (pytest_runtest_setup)."""
    for item in items:
        try:
            required_findings(item)
        except pytest.UsageError as exc:
            if worker_id(config) is None:
                raise
            item.stash[_BAD_MARK] = str(exc)


@pytest.hookimpl(tryfirst=True)  # before its fixtures (no guest is booted for it)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """In an xdist worker, a test with a bad expect_kernel_finding mark fails with the mark's
    error (a setup failure is never a known issue's xfail: harness.plugin.results) and the
    session stops after it."""
    bad = item.stash.get(_BAD_MARK, None)
    if bad is not None:
        item.session.shouldstop = bad
        pytest.fail(bad, pytrace=False)


def _required(f: dmesg.Finding, kind: str, pattern: str) -> bool:
    return f.kind == kind and bool(re.search(pattern, f.line) or re.search(pattern, f.fingerprint))


def missing(findings: list[dmesg.Finding], required: list[tuple[str, str]]) -> list[str]:
    """The required (kind, regex) pairs no finding matches, as "KIND /regex/" ([] when none)."""
    return [f"{kind} /{pattern}/" for kind, pattern in required
            if not any(_required(f, kind, pattern) for f in findings)]


def cut(end, start: str | None) -> str:
    """One test's kernel log as the plugin cuts it, from end (a harness.vm.machine.EndMark): the
    lines of end.dmesg (the whole log, read after the END marker was written) after the line
    holding start (the BEGIN marker, Vm.mark) and before the END marker's line; from the log's
    first line when the BEGIN marker was not written (None) or is gone (the log buffer wrapped:
    dmesg.slice_between), so a lost marker never drops a finding."""
    return dmesg.slice_between(end.dmesg, start, end.marker)


def findings_in(text: str, stuck: list[str] | tuple[str, ...] = ()) -> list[dmesg.Finding]:
    """The findings of a slice that count (harness.dmesg.in_scope), then a STUCK_TASK finding
    for each task left in D state ("STATE PID WCHAN ARGS" lines)."""
    return [f for f in dmesg.scan(text) if dmesg.in_scope(f)] + [
        dmesg.Finding("STUCK_TASK", f"left in D state after the test: {t}", t, t) for t in stuck]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Slice the guest's dmesg around the test; a finding not declared with expect_dmesg or
    expect_kernel_finding, a finding expect_kernel_finding requires and the slice lacks, or a
    guest that died, fails the test's call phase (so xfail/known issues apply)."""
    machine = item.config.stash.get(GUEST, None)
    if item.get_closest_marker("vm") is None or machine is None:
        outcome = yield
        _judge(item, outcome)
        return
    began = time.monotonic()
    start = machine.mark(f"BEGIN {item.nodeid}", rearm_warn_once=True)  # None: the guest is gone
    item.stash[HARNESS_SECONDS] = time.monotonic() - began
    outcome = yield
    _collect_dmesg(item, machine, start)
    _judge(item, outcome)


def _collect_dmesg(item: pytest.Item, machine, start: str | None) -> None:
    run_dir = item.config.stash[RUN_DIR]
    name = safe_name(item.nodeid.split("::", 1)[-1])[:120]
    path = run_dir / "dmesg" / f"{name}.log"
    text = ""
    began = time.monotonic()
    end = machine.end_mark(f"END {item.nodeid}")
    item.stash[HARNESS_SECONDS] = item.stash.get(HARNESS_SECONDS, 0.0) + time.monotonic() - began
    if end is not None:
        text = cut(end, start)
    else:
        # The guest died or hangs: the console holds the kernel log up to its end.
        console = machine.console()
        text = dmesg.slice_between(console, start, None) if start and start in console else console[-20000:]
        outcome, why = machine.classify_death()
        item.stash[VM_OUTCOME] = f"{outcome}: {why}"
        machine.dump_tasks(run_dir / "dmesg" / f"{name}.console-tail.log")
    path.write_text(text)
    item.stash[DMESG_FILE] = str(path.relative_to(run_dir))
    stuck = end.stuck if end is not None else []
    findings = findings_in(text, stuck)
    item.stash[FINDINGS] = item.stash.get(FINDINGS, []) + findings
    tainted = sorted({f.kind for f in findings if f.kind in TAINTING})
    wedge = item.get_closest_marker("fresh_guest_after")
    if stuck and not wedge:
        wedge = pytest.mark.fresh_guest_after(f"tasks stuck in D state: {'; '.join(stuck)[:200]}").mark
    if item.session.items and item.session.items[-1] is item:
        return  # no next test to protect: no reboot (a debug guest takes minutes)
    if end is None:  # one fresh guest, whatever the dead one's console says (its panic is a finding)
        _restart(item, machine, "restart failed")
        return
    if wedge and not tainted and machine.alive():
        log.warning("%s may leave the guest wedged (%s): rebooting the guest", item.nodeid, wedge.args[0])
        _restart(item, machine, "guest restart after a test that may wedge it failed")
    if tainted and machine.alive():
        # an oops may leave locks held or memory corrupt: the next test gets a fresh guest,
        # so its findings are its own
        log.warning("%s left the kernel tainted (%s): rebooting the guest", item.nodeid, ", ".join(tainted))
        _restart(item, machine, f"guest restart after {', '.join(tainted)} failed")


def _restart(item: pytest.Item, machine, failed: str) -> None:
    """A fresh guest for the next test; a restart that fails is added to this test's VM outcome."""
    try:
        machine.restart()
    except HarnessError as exc:
        previous = item.stash.get(VM_OUTCOME, "")
        item.stash[VM_OUTCOME] = f"{previous}; {failed}: {exc}" if previous else f"{failed}: {exc}"


def _judge(item: pytest.Item, outcome) -> None:
    """Turn a passing call into a failure for a dead guest, unexpected dmesg findings or an
    expect_kernel_finding the test's slice lacks."""
    if outcome.excinfo is not None:
        return
    vm_outcome = item.stash.get(VM_OUTCOME, None)
    if vm_outcome:
        outcome.force_exception(pytest.fail.Exception(f"guest died during the test: {vm_outcome}", pytrace=False))
        return
    findings, required = item.stash.get(FINDINGS, []), required_findings(item)
    problems = []
    unexpected = unexplained(findings, expected_patterns(item), required)
    if unexpected:
        problems.append("kernel log findings during this test (not declared with expect_dmesg or "
                        f"expect_kernel_finding):\n{unexpected}")
    where = f" ({item.stash[DMESG_FILE]})" if DMESG_FILE in item.stash else ""
    problems += [f"expected kernel finding {m} not in this test's kernel-log slice{where}"
                 for m in missing(findings, required)]
    if problems:
        outcome.force_exception(pytest.fail.Exception("\n".join(problems), pytrace=False))


def unexplained(findings: list[dmesg.Finding], patterns: list[str],
                required: list[tuple[str, str]] | tuple = ()) -> str:
    """The findings no pattern matches (f.matches) and no required (kind, regex) pair of
    expect_kernel_finding names, one indented "kind: line" each ('' when none)."""
    return "\n".join(f"  {f.kind}: {f.line}" for f in findings
                     if not any(f.matches(p) for p in patterns) and not any(_required(f, *r) for r in required))
