"""KTAP: parse the guest's output and write the run's results.ktap."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.results.model import CaseResult, Verdict

_LINE = re.compile(r"^\s*(ok|not ok) (\d+) ([^#]*?)\s*(?:#\s*(\w+)\s*(.*))?$")


@dataclass(frozen=True)
class KtapCase:
    """One test line of a KTAP document."""

    ok: bool
    number: int
    name: str
    directive: str = ""
    reason: str = ""

    @property
    def verdict(self) -> Verdict:
        d = self.directive.upper()
        if d == "SKIP":
            return Verdict.SKIP
        if d == "XFAIL":
            return Verdict.XFAIL
        if d == "TIMEOUT":
            return Verdict.TIMEOUT
        if d == "ERROR":
            return Verdict.ERROR
        return Verdict.PASS if self.ok else Verdict.FAIL


def parse(text: str) -> list[KtapCase]:
    """Top-level test lines of a KTAP document; console noise and diagnostics are ignored."""
    cases = []
    for line in text.splitlines():
        if line.startswith((" ", "\t")):
            continue  # nested subtests belong to their parent line
        m = _LINE.match(line)
        if m:
            cases.append(KtapCase(m.group(1) == "ok", int(m.group(2)), m.group(3).strip(),
                                  (m.group(4) or ""), (m.group(5) or "").strip()))
    return cases


def plan_of(text: str) -> int | None:
    m = re.search(r"^1\.\.(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def _directive(v: Verdict, reason: str) -> str:
    reason = reason.replace("\n", " ").replace("#", "")[:200]
    if v in (Verdict.SKIP, Verdict.XFAIL, Verdict.TIMEOUT, Verdict.ERROR):
        return f" # {v.value} {reason}".rstrip()
    return ""


def render(suite: str, cases: list[CaseResult]) -> str:
    """results.ktap: the suite, its pytest tests, and each test's guest subtests nested."""
    out = ["KTAP version 1", "1..1", "  KTAP version 1", f"  # Subtest: {suite}", f"  1..{len(cases)}"]
    totals: dict[str, int] = {}
    for i, case in enumerate(cases, 1):
        name = case.nodeid.replace("#", "")
        if case.subtests:
            out += ["    KTAP version 1", f"    1..{len(case.subtests)}"]
            for j, sub in enumerate(case.subtests, 1):
                sv = Verdict(sub["verdict"])
                ok = "ok" if sv in (Verdict.PASS, Verdict.SKIP, Verdict.XFAIL) else "not ok"
                out.append(f"    {ok} {j} {sub['name']}{_directive(sv, sub.get('reason', ''))}")
        good = case.verdict in (Verdict.PASS, Verdict.SKIP, Verdict.XFAIL)
        out.append(f"  {'ok' if good else 'not ok'} {i} {name}{_directive(case.verdict, case.reason)}")
        totals[case.verdict.value] = totals.get(case.verdict.value, 0) + 1
    failed = any(c.verdict in (Verdict.FAIL, Verdict.ERROR, Verdict.TIMEOUT, Verdict.XPASS) for c in cases)
    out.append(f"{'not ok' if failed else 'ok'} 1 {suite}")
    out.append("# Totals: " + " ".join(f"{k.lower()}:{v}" for k, v in sorted(totals.items())))
    return "\n".join(out) + "\n"
