"""Kernel log findings: WARN, BUG, Oops, KASAN, UBSAN, lockdep, RCU stalls, hung tasks.

Pure text processing: slices of dmesg between markers, classified findings with a
fingerprint (kind + first function) so the same splat is recognised across runs.
No verdicts here: the pytest plugin decides what a finding means for a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: (kind, regex on one line). Order matters: the first match names the finding.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(rx))
    for kind, rx in (
        ("KASAN", r"BUG: KASAN: [\w-]+"),
        ("KCSAN", r"BUG: KCSAN: [\w-]+"),
        ("KFENCE", r"BUG: KFENCE: "),
        ("UBSAN", r"UBSAN: [\w-]+"),
        ("LOCKDEP", r"WARNING: (possible circular locking dependency|possible recursive locking|"
                    r"inconsistent lock state|suspicious RCU usage|bad unlock balance|"
                    r"held lock freed|lock held when returning)"),
        ("SLEEP_IN_ATOMIC", r"BUG: sleeping function called from invalid context"),
        ("LIST_CORRUPTION", r"list_(add|del) corruption"),
        ("HUNG_TASK", r"INFO: task .+ blocked for more than \d+ seconds"),
        ("RCU_STALL", r"rcu: INFO: rcu_\w+ (self-)?detected stalls?|detected stall on CPU"),
        ("SOFT_LOCKUP", r"watchdog: BUG: soft lockup|BUG: soft lockup"),
        ("HARD_LOCKUP", r"Watchdog detected hard LOCKUP"),
        ("PANIC", r"Kernel panic - not syncing"),
        ("OOPS", r"Oops: |general protection fault|BUG: unable to handle (page fault|kernel)"),
        ("BUG", r"kernel BUG at |BUG: [A-Za-z]"),
        ("WARNING", r"WARNING: CPU: \d+ PID: \d+ at |WARNING: .* at [\w/.]+:\d+|WARNING: [\w/.-]+:\d+ at "
                    r"|------------\[ cut here \]"),
        ("MEMLEAK", r"kmemleak: \d+ new suspected memory leaks"),
    )
)

_TS = re.compile(r"^(<\d+>)?\s*\[\s*\d+\.\d+\]\s?")
_RIP = re.compile(r"RIP: \S+:(?P<fn>[\w.]+)\+0x")
_AT = re.compile(r" at (?P<where>[\w/.-]+:\d+) (?P<fn>[\w.]+)?")
_CALL = re.compile(r"^\s*(?P<fn>[\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")


@dataclass(frozen=True)
class Finding:
    """One splat: its kind, the first line, a fingerprint and the lines around it."""

    kind: str
    line: str
    fingerprint: str
    excerpt: str

    def matches(self, pattern: str) -> bool:
        """True when pattern (a regex) matches the kind, the line or the fingerprint."""
        rx = re.compile(pattern)
        return bool(rx.search(self.kind) or rx.search(self.line) or rx.search(self.fingerprint))


#: A KCSAN report concerns this project when a frame or the title names FUSE or io_uring code;
#: an instrumented kernel also reports races of its own elsewhere (scheduler, mm, drivers).
_OURS = re.compile(r"fuse|io_uring|iou_|\bio_(?:req|ring|issue|submit|cqring|fill_cqe|poll|wq|rsrc|kbuf|"
                   r"buffer|sq|cq|uring)")


def in_scope(f: Finding) -> bool:
    """Every finding counts, except a KCSAN data race that touches neither FUSE nor io_uring."""
    return f.kind != "KCSAN" or bool(_OURS.search(f.excerpt.split("=" * 20)[0]))


def strip_ts(line: str) -> str:
    return _TS.sub("", line)


_IN = re.compile(r" (?:in|at) (?P<fn>[A-Za-z_][\w.]*)\+0x")


def _function(lines: list[str], first: str) -> str:
    m_in = _IN.search(first)
    if m_in:
        return m_in.group("fn")
    m = _AT.search(first)
    if m and m.group("fn"):
        return m.group("fn")
    for line in lines:
        body = strip_ts(line)
        if m := _RIP.search(body):
            return m.group("fn")
    for line in lines:
        if m := _CALL.match(strip_ts(line)):
            return m.group("fn")
    if m:
        return m.group("where")
    return "unknown"


def scan(text: str, context: int = 40) -> list[Finding]:
    """Every finding in text (a dmesg slice); a 'cut here' line and its WARNING count once."""
    lines = text.splitlines()
    findings: list[Finding] = []
    skip_until = -1
    for i, raw in enumerate(lines):
        if i <= skip_until:
            continue
        body = strip_ts(raw)
        for kind, rx in PATTERNS:
            if rx.search(body):
                if "cut here" in body:
                    # the real title is on the next line(s); classify from there
                    nxt = next((strip_ts(x) for x in lines[i + 1 : i + 4] if strip_ts(x).strip()), "")
                    for k2, rx2 in PATTERNS:
                        if k2 != "WARNING" and rx2.search(nxt):
                            kind = k2
                            break
                    body = nxt or body
                    skip_until = i + 1
                window = lines[i : i + context]
                end = next((j for j, x in enumerate(window) if "---[ end trace" in x), None)
                if end is not None:
                    window = window[: end + 1]
                    skip_until = max(skip_until, i + end)
                fn = _function(window, body)
                findings.append(Finding(kind, body.strip(), f"{kind}:{fn}", "\n".join(window)))
                break
    return findings


def slice_between(text: str, start_marker: str | None, end_marker: str | None) -> str:
    """The lines after the line holding start_marker and before end_marker's line.

    With no start_marker, or one the text lacks, the lines from the first: the marker was
    never written, or the kernel's log buffer wrapped during the test (the oldest lines go
    first, so all that is left was written after it). A finding is then judged with the
    lines before it rather than dropped: a test must not pass because its slice was lost."""
    lines = text.splitlines()
    start = next((i for i, x in enumerate(lines) if start_marker in x), None) if start_marker else None
    if start is None:
        start = -1
    out = []
    for line in lines[start + 1 :]:
        if end_marker and end_marker in line:
            break
        out.append(line)
    return "\n".join(out)
