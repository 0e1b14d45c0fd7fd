"""KTAP writer: header, plan, results, diagnostics, totals, exit code.

Print-only, no FUSE knowledge. Exit codes follow kselftest: 0 all passed,
1 any failure, 4 everything skipped.
"""

from __future__ import annotations

import sys
from typing import TextIO

PASS, FAIL, SKIP = "pass", "fail", "skip"


def clean(desc: str) -> str:
    """A description without '#' and newlines (KTAP forbids them)."""
    return " ".join(desc.replace("#", "").split())


class Ktap:
    """Writes one KTAP document to `out` (stdout by default)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.counts = {PASS: 0, FAIL: 0, SKIP: 0, "error": 0, "timeout": 0}
        self.n = 0

    def _p(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def header(self, plan: int) -> None:
        """`KTAP version 1` and the plan line."""
        self._p("KTAP version 1")
        self._p(f"1..{plan}")

    def diag(self, text: str) -> None:
        """Diagnostic lines, each prefixed with '# '."""
        for line in str(text).splitlines() or [""]:
            self._p(f"# {line}")

    def result(self, desc: str, status: str, reason: str = "") -> None:
        """One test line: pass, fail, skip, error (# ERROR) or timeout (# TIMEOUT)."""
        self.n += 1
        desc = clean(desc)
        reason = clean(reason)
        if status == PASS:
            line = f"ok {self.n} {desc}"
        elif status == SKIP:
            line = f"ok {self.n} {desc} # SKIP {reason}".rstrip()
        elif status in ("error", "timeout"):
            line = f"not ok {self.n} {desc} # {status.upper()} {reason}".rstrip()
        else:
            line = f"not ok {self.n} {desc}"
        self.counts[status] += 1
        self._p(line)

    def totals(self) -> None:
        """The kselftest `# Totals:` line."""
        c = self.counts
        self._p(f"# Totals: pass:{c[PASS]} fail:{c[FAIL] + c['timeout']} xfail:0 "
                f"xpass:0 skip:{c[SKIP]} error:{c['error']}")

    def exit_code(self) -> int:
        """0 all passed, 1 any failure or error, 4 all skipped."""
        c = self.counts
        if c[FAIL] or c["error"] or c["timeout"]:
            return 1
        if c[SKIP] and not c[PASS]:
            return 4
        return 0
