"""Read `git am` / `git apply` output: which file and hunk of a patch failed, and why.

Pure text functions, so every failure class can be pinned with a sample log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)")


@dataclass(frozen=True)
class ApplyFailure:
    """Where a patch stopped applying; any field may be unknown (None)."""

    reason: str
    file: str | None = None
    line: int | None = None
    hunk: str | None = None

    def where(self) -> str:
        """`fs/x.c hunk #2 (@@ -10,6 +10,7 @@ f())`, `fs/x.c near line 10`, `fs/x.c`, or `?`."""
        where = self.file or "?"
        if self.hunk:
            where += f" {self.hunk}"
        elif self.line:
            where += f" near line {self.line}"
        return where

    def describe(self) -> str:
        """One line: `fs/x.c hunk #2 (@@ -10,6 +10,7 @@ f()): does not apply`."""
        return f"{self.where()}: {self.reason}"


_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$", re.M), "does not apply"),
    (re.compile(r"^CONFLICT \(content\): Merge conflict in (?P<file>.+)$", re.M), "3-way merge conflict"),
    (re.compile(r"^CONFLICT \([^)]*\): (?P<file>\S+) deleted in .*$", re.M), "file deleted on one side"),
    (re.compile(r"^error: (?P<file>.+): does not exist in index$", re.M), "file does not exist in the tree"),
    (re.compile(r"^error: (?P<file>.+): No such file or directory$", re.M), "file does not exist in the tree"),
    (re.compile(r"^error: (?P<file>.+): already exists in (?:index|working directory)$", re.M), "file already exists"),
    (
        re.compile(r"^error: sha1 information is lacking or useless \((?P<file>.+)\)\.$", re.M),
        "the lines it expects are not in this tree and its preimage blob is unknown here, so no 3-way merge",
    ),
    (re.compile(r"^error: (?P<file>.+): patch does not apply$", re.M), "does not apply"),
    (re.compile(r"^error: corrupt patch at line (?P<line>\d+)$", re.M), "corrupt patch"),
    (re.compile(r"^error: patch fragment without header at line (?P<line>\d+).*$", re.M), "corrupt patch"),
    (re.compile(r"^Patch is empty\.", re.M), "patch is empty"),
    (re.compile(r"^Patch format detection failed\.", re.M), "not a mail or git patch"),
    (
        re.compile(r"^error: Your local changes to the following files would be overwritten", re.M),
        "scratch tree is dirty",
    ),
]


def parse_am_output(text: str) -> ApplyFailure:
    """Classify `git am` (or `git apply --check -v`) output; first matching rule wins."""
    for rx, reason in _RULES:
        m = rx.search(text)
        if not m:
            continue
        groups = m.groupdict()
        file = groups.get("file")
        line = groups.get("line")
        return ApplyFailure(reason, file.strip() if file else None, int(line) if line and file else None)
    tail = [ln for ln in text.splitlines() if ln.startswith(("error:", "fatal:"))]
    return ApplyFailure(tail[-1].split(":", 1)[1].strip() if tail else "git am failed")


def merge_failures(am: ApplyFailure, check: ApplyFailure) -> ApplyFailure:
    """Prefer `git apply --check` for the line (it names the hunk) and `git am` for the reason."""
    if check.file and check.line and (am.file in (None, check.file)):
        reason = am.reason if am.reason != "does not apply" else check.reason
        return ApplyFailure(reason, check.file, check.line)
    return am


def hunks(patch: str) -> list[tuple[str, int, int, str]]:
    """Every hunk as (file, number within that file, old start line, header line)."""
    out: list[tuple[str, int, int, str]] = []
    current, n = None, 0
    for ln in patch.splitlines():
        fm = _FILE.match(ln)
        if fm:
            current, n = fm.group(2), 0
            continue
        if ln.startswith("+++ ") and current is None:
            current, n = ln[4:].split("\t")[0].removeprefix("b/"), 0
            continue
        hm = _HUNK.match(ln)
        if hm and current:
            n += 1
            out.append((current, n, int(hm.group(1)), ln))
    return out


def name_hunk(patch: str, failure: ApplyFailure) -> ApplyFailure:
    """Fill `failure.hunk` from the patch text when file and line are known."""
    if not failure.file:
        return failure
    mine = [h for h in hunks(patch) if h[0] == failure.file]
    if not mine:
        return failure
    pick = None
    if failure.line is not None:
        exact = [h for h in mine if h[2] == failure.line]
        # git reports the hunk's old start; with context offsets it can drift, so take the nearest.
        pick = exact[0] if exact else min(mine, key=lambda h: abs(h[2] - failure.line))  # type: ignore[operator]
    elif len(mine) == 1:
        pick = mine[0]
    if pick is None:
        return failure
    label = f"hunk #{pick[1]} ({pick[3].strip()})"
    return ApplyFailure(failure.reason, failure.file, failure.line, label)
