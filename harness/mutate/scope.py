"""Which code is mutated: the lines a series adds, or a file (or one function) of the tree.

Series: `git diff -U0 BASE HEAD` in the series' tree, where BASE is the parent of the series'
first own patch (prerequisites are part of the base) and HEAD its last: the `+` lines of
every .c and .h file. File: every line of the file, or of one function's body. In both,
only code inside function bodies is mutated (no struct, initialiser or array size).
The order is fixed by the seed: all candidates sorted by (file, offset, operator), then
shuffled with random.Random(seed); `--max` takes the first N of that order, so a larger N
later extends the same sample.
"""

from __future__ import annotations

import difflib
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import InfraError, UserError
from harness.mutate import ctext
from harness.mutate.operators import Mutant, generate

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.M)
C_SUFFIXES = (".c", ".h")


class ScopeError(UserError):
    """The scope names no code to mutate (a missing file or function, a series without C lines)."""


@dataclass(frozen=True)
class Scope:
    """What to mutate: `kind` "series" (base..head of the tree) or "file" (file, function)."""

    kind: str
    file: str | None = None
    function: str | None = None
    base: str | None = None
    head: str | None = None

    def describe(self) -> str:
        if self.kind == "series":
            return f"lines the series adds ({(self.base or '')[:12]}..{(self.head or '')[:12]})"
        return f"{self.file}" + (f" function {self.function}" if self.function else "")

    def to_json(self) -> dict:
        return {"kind": self.kind, "file": self.file, "function": self.function, "base": self.base,
                "head": self.head}


def check_file_arg(file: str) -> str:
    """A --file value as a clean path relative to the tree's top; ScopeError otherwise."""
    p = PurePosixPath(file)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ScopeError(f"--file {file}: give a path inside the kernel tree, relative to its top",
                         "e.g. --file fs/fuse/dev_uring.c")
    if p.suffix not in C_SUFFIXES:
        raise ScopeError(f"--file {file}: not a C file (.c or .h)", "e.g. --file fs/fuse/dev_uring.c")
    return str(p)


def added_lines(tree: Path, base: str, head: str) -> dict[str, set[int]]:
    """{path: 1-based line numbers at head} of the lines base..head adds to .c and .h files."""
    proc = subprocess.run(["git", "-C", str(tree), "diff", "-U0", "--no-color", "--no-ext-diff", "--no-renames",
                           base, head, "--", *(f"*{s}" for s in C_SUFFIXES)], capture_output=True, text=True,
                          errors="replace")
    if proc.returncode != 0:
        raise InfraError(f"git diff {base[:12]}..{head[:12]} in {tree} failed: {proc.stderr.strip()[-300:]}")
    return parse_added(proc.stdout)


def parse_added(diff: str) -> dict[str, set[int]]:
    """The added line numbers per new-side file of a `git diff -U0` text."""
    out: dict[str, set[int]] = {}
    for part in re.split(r"^diff --git ", diff, flags=re.M)[1:]:
        m = re.search(r"^\+\+\+ b/(.+)$", part, re.M)
        if not m:
            continue  # a deleted file
        lines = out.setdefault(m.group(1), set())
        for h in _HUNK.finditer(part):
            start, count = int(h.group(1)), int(h.group(2) or 1)
            lines.update(range(start, start + count))
    return {f: lines for f, lines in out.items() if lines}


def candidates(tree: Path, scope: Scope) -> list[Mutant]:
    """Every mutant in scope, sorted by (file, offset, operator)."""
    if scope.kind == "series":
        assert scope.base and scope.head
        wanted: dict[str, set[int] | None] = dict(sorted(added_lines(tree, scope.base, scope.head).items()))
        if not wanted:
            raise ScopeError(f"the series adds no line to a .c or .h file ({scope.base[:12]}..{scope.head[:12]})",
                             "mutate a file of the tree instead: --file PATH [--function NAME]")
    else:
        assert scope.file
        if not (tree / scope.file).is_file():
            raise ScopeError(f"--file {scope.file}: no such file in the kernel tree {tree}")
        wanted = {scope.file: None}
    out: list[Mutant] = []
    for file, allowed in wanted.items():
        text = ctext.read_c(tree / file)
        masked = ctext.mask(text)
        funcs = ctext.functions(masked)
        if scope.function:
            f = ctext.find_function(masked, scope.function)
            if f is None:
                near = difflib.get_close_matches(scope.function, sorted({g.name for g in funcs}), n=5)
                raise ScopeError(f"--function {scope.function}: no such function defined in {file}",
                                 f"did you mean: {', '.join(near)}" if near else
                                 f"{file} defines {len(funcs)} functions; see `grep -n '^[a-z].*(' {file}`")
            funcs = [f]
        out += generate(file, text, masked, allowed, [(f.body_start, f.body_end + 1, f.name) for f in funcs])
    return out


def select(mutants: list[Mutant], seed: int, limit: int | None) -> list[Mutant]:
    """The first `limit` of the candidates in the seed's order (all of them for None)."""
    order = sorted(mutants, key=lambda m: (m.file, m.start, m.operator, m.replacement))
    random.Random(seed).shuffle(order)
    return order[:limit] if limit is not None else order

