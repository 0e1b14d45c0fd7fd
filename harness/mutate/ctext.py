"""C source as text: comments, strings and preprocessor lines masked out, functions found by
brace matching. No C parser: the operators (harness.mutate.operators) read the masked text,
where every character of a comment, a string or character literal's inside and a preprocessor
line (with its backslash continuations) is a space, so offsets and line numbers stay those of
the file and nothing in them is ever mutated.

Files are read as latin-1 (`read_c`): one character per byte, so a mutated file written back
with `encode("latin-1")` differs from the original only in the mutated span.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path


def read_c(path: Path) -> str:
    """A C file's text, one character per byte (latin-1: round-trips every byte)."""
    return path.read_bytes().decode("latin-1")


def mask(text: str) -> str:
    """`text` with comments, the insides of string and character literals and preprocessor
    lines replaced by spaces (newlines kept): same length, same line numbers."""
    out = list(text)
    i, n = 0, len(text)
    line_start = True  # only whitespace since the last newline
    while i < n:
        c = text[i]
        if c == "\n":
            line_start = True
            i += 1
            continue
        if line_start and c == "#":
            j = i
            while j < n and text[j] != "\n":
                if text[j] == "\\" and j + 1 < n and text[j + 1] == "\n":
                    j += 2
                    continue
                j += 1
            _blank(out, i, j)
            i = j
            continue
        if c not in " \t\r\f\v":
            line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            _blank(out, i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            _blank(out, i, j)
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            _blank(out, i + 1, min(j, n))  # the quotes stay: a literal is still one token
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _blank(out: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if out[k] != "\n":
            out[k] = " "


class Lines:
    """Offset <-> 1-based line number of one text."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def start(self, line: int) -> int:
        return self.starts[line - 1]


def match_forward(masked: str, i: int) -> int:
    """The index of the bracket closing the one at `i` (`(`, `[` or `{`), -1 if unbalanced."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    opening, closing = masked[i], pairs[masked[i]]
    depth = 0
    for j in range(i, len(masked)):
        ch = masked[j]
        if ch == opening:
            depth += 1
        elif ch == closing:
            depth -= 1
            if depth == 0:
                return j
    return -1


def match_backward(masked: str, j: int) -> int:
    """The index of the `(` that the `)` at `j` closes, -1 if unbalanced."""
    depth = 0
    for i in range(j, -1, -1):
        if masked[i] == ")":
            depth += 1
        elif masked[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    return -1


_IDENT_END = re.compile(r"([A-Za-z_]\w*)\s*$")
#: Annotations that may follow a function's parameter list (sparse's lock context).
_ANNOTATIONS = ("__acquires", "__releases", "__must_hold", "__cond_acquires", "__no_context_analysis")


@dataclass(frozen=True)
class Function:
    """One function definition: its name, the line of its name, and its body's offsets
    (`body_start` at the `{`, `body_end` at the matching `}`)."""

    name: str
    line: int
    body_start: int
    body_end: int


def functions(masked: str) -> list[Function]:
    """Every function definition at file level: a `{` at brace depth 0 right after `NAME(...)`
    (and any sparse lock annotations). Struct bodies and initialisers (`= {`) are no function."""
    lines = Lines(masked)
    found: list[Function] = []
    i = 0
    while True:
        i = masked.find("{", i)
        if i < 0:
            return found
        end = match_forward(masked, i)
        if end < 0:
            return found
        name, at = _signature_name(masked, i)
        if name:
            found.append(Function(name, lines.line(at), i, end))
        i = end + 1


def _signature_name(masked: str, brace: int) -> tuple[str | None, int]:
    """(function name, its offset) when the `{` at `brace` opens a function body, else (None, 0)."""
    j = brace - 1
    while True:
        while j >= 0 and masked[j].isspace():
            j -= 1
        if j < 0 or masked[j] != ")":
            return None, 0
        k = match_backward(masked, j)
        if k < 0:
            return None, 0
        m = _IDENT_END.search(masked, 0, k)
        if not m:
            return None, 0
        if m.group(1) in _ANNOTATIONS:
            j = m.start(1) - 1
            continue
        if m.group(1) in ("if", "while", "for", "switch", "sizeof"):
            return None, 0
        return m.group(1), m.start(1)


def find_function(masked: str, name: str) -> Function | None:
    """The definition of `name` (the first, if a file has two under #ifdef), or None."""
    return next((f for f in functions(masked) if f.name == name), None)
