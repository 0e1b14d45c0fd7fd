"""Mutation operators over C text: small, explainable changes a reviewer would name.

Each operator reads the masked text (harness.mutate.ctext.mask: no comment, string or
preprocessor line is ever touched) and yields spans of the original text with a replacement:

    cond-negate   `if (C)` / `while (C)`        -> `if (!(C))`
    cond-drop     `if (A && B)` / `if (A || B)` -> `if (B)` and `if (A)` (one operand dropped;
                  `||` splits first, as C's precedence does)
    relop         `<` <-> `<=`, `>` <-> `>=` (never `<<`, `>>`, `->`, `<<=`, `>>=`)
    off-by-one    an integer literal compared with < <= > >= == != becomes N+1 and N-1 (N > 0);
                  one added or subtracted (`+ N`, `- N`) becomes N+1 (and N-1 when N > 0)
    call-drop     a statement that is only a call of a listed kind (DROPPABLE: unlock, recycle,
                  flush, wake_up, put, free, release, complete, request end, io_uring cmd done)
                  becomes the empty statement `;`
    check-drop    `if (C) return -EXXX;` (also `return ERR_PTR(-EXXX);`, or in braces) and the
                  kernel's error-path form `if (C) goto LABEL;` never fire: C -> 0
    errcode-zero  `return -EXXX;` and `x = -EXXX;` return or store 0 instead

A Mutant is a span (offsets into the file), what was there and what replaces it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from harness.mutate.ctext import Lines, match_backward, match_forward

OPERATORS = ("cond-negate", "cond-drop", "relop", "off-by-one", "call-drop", "check-drop", "errcode-zero")

#: call-drop: a callee whose name has one of these words (split at `_`) ...
DROPPABLE_WORDS = ("unlock", "recycle", "flush", "put", "free", "release", "complete", "done")
#: ... or one of these pieces (wake_up_all, fuse_request_end, ...), or is one of DROPPABLE_NAMES.
DROPPABLE_PIECES = ("wake_up", "request_end", "end_request", "req_end")
DROPPABLE_NAMES = ("kfree", "kvfree", "vfree", "fput", "iput", "dput")


@dataclass(frozen=True)
class Mutant:
    """One change to one file: text[start:end] (== original) becomes replacement."""

    file: str
    line: int
    operator: str
    start: int
    end: int
    original: str
    replacement: str
    #: the function whose body holds it ("" when not known); not part of the id
    function: str = ""

    @property
    def id(self) -> str:
        """A stable 10-hex-digit id of the change (file, offset, operator, texts)."""
        blob = "\0".join((self.file, str(self.start), self.operator, self.original, self.replacement))
        return hashlib.sha256(blob.encode("latin-1", "replace")).hexdigest()[:10]

    def apply(self, text: str) -> str:
        """The file's text with this mutant in it; ValueError when text is not the one it was made from."""
        if text[self.start:self.end] != self.original:
            raise ValueError(f"{self.file}:{self.line}: the text there is not {self.original!r} any more")
        return text[:self.start] + self.replacement + text[self.end:]

    def to_json(self) -> dict:
        return {**asdict(self), "id": self.id}


def generate(path: str, text: str, masked: str, allowed: set[int] | None,
             ranges: list[tuple[int, int, str]] | None = None) -> list[Mutant]:
    """Every mutant of one file's text, sorted by offset then operator.

    `allowed`: the 1-based line numbers a mutant may touch (None: all); a mutant counts when
    any line of its span is allowed. `ranges`: (start, end, function name) offsets it must
    lie inside (function bodies; None: the whole file)."""
    lines = Lines(text)
    out: dict[str, Mutant] = {}
    for operator, start, end, replacement in _all(text, masked):
        inside = [name for lo, hi, name in ranges or () if lo <= start and end <= hi]
        if ranges is not None and not inside:
            continue
        first, last = lines.line(start), lines.line(max(start, end - 1))
        if allowed is not None and not any(n in allowed for n in range(first, last + 1)):
            continue
        m = Mutant(path, first, operator, start, end, text[start:end], replacement, inside[0] if inside else "")
        out.setdefault(m.id, m)
    return sorted(out.values(), key=lambda m: (m.start, OPERATORS.index(m.operator), m.replacement))


def _all(text: str, masked: str) -> Iterator[tuple[str, int, int, str]]:
    yield from _conditions(text, masked)
    yield from _relops(masked)
    yield from _off_by_one(masked)
    yield from _call_drops(text, masked)
    yield from _errcodes(masked)


_COND = re.compile(r"\b(if|while)\s*\(")
_GOTO = re.compile(r"\s*(?:\{\s*)?goto\s+\w+\s*;(?:\s*\})?")
_RETURN_ERR = re.compile(r"\s*(?:\{\s*)?return\s+(?:ERR_PTR\s*\(\s*)?-E[A-Z0-9]+\b\s*\)?\s*;(?:\s*\})?")


def _conditions(text: str, masked: str) -> Iterator[tuple[str, int, int, str]]:
    for m in _COND.finditer(masked):
        open_ = m.end() - 1
        close = match_forward(masked, open_)
        if close < 0:
            continue
        lo, hi = open_ + 1, close
        while lo < hi and masked[lo].isspace():
            lo += 1
        while hi > lo and masked[hi - 1].isspace():
            hi -= 1
        if lo == hi:
            continue
        cond = text[lo:hi]
        yield "cond-negate", lo, hi, f"!({cond})"
        for keep in _drop_operand(text, masked, lo, hi):
            yield "cond-drop", lo, hi, keep
        if m.group(1) == "if" and (_RETURN_ERR.match(masked, close + 1) or _GOTO.match(masked, close + 1)):
            yield "check-drop", lo, hi, "0"


def _drop_operand(text: str, masked: str, lo: int, hi: int) -> Iterator[str]:
    """The condition text[lo:hi] with one top-level operand of its loosest `||` or `&&` left out."""
    for op in ("||", "&&"):
        cuts, depth, i = [], 0, lo
        while i < hi:
            ch = masked[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif depth == 0 and masked.startswith(op, i):
                cuts.append(i)
                i += 2
                continue
            i += 1
        if not cuts:
            continue
        bounds = [lo, *cuts, hi]
        operands = [text[bounds[k] + (2 if k else 0):bounds[k + 1]].strip() for k in range(len(bounds) - 1)]
        for k in range(len(operands)):
            yield f" {op} ".join(operands[:k] + operands[k + 1:])
        return


_RELOP = re.compile(r"(?<![<>=!-])(<=|>=|<|>)(?![<>=])")
_SWAP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}


def _relops(masked: str) -> Iterator[tuple[str, int, int, str]]:
    for m in _RELOP.finditer(masked):
        yield "relop", m.start(), m.end(), _SWAP[m.group(1)]


_INT = r"(0[xX][0-9a-fA-F]+|\d+)([uUlL]*)\b"
_CMP_LEFT = re.compile(r"(?<![<>=!-])(?:<=|>=|==|!=|<|>)(?![<>=])\s*" + _INT)
_CMP_RIGHT = re.compile(r"(?<![\w.])" + _INT + r"\s*(?:<=|>=|==|!=|<|>)(?![<>=])")
_ARITH = re.compile(r"(?<=[\w)\]])\s*([-+])\s*(?![-+=])" + _INT)


def _off_by_one(masked: str) -> Iterator[tuple[str, int, int, str]]:
    seen = set()
    for rx in (_CMP_LEFT, _CMP_RIGHT):
        for m in rx.finditer(masked):
            num = rx.groups - 1  # the literal's group (the suffix is the last one)
            start, end = m.start(num), m.end(num)
            if start in seen:
                continue
            seen.add(start)
            value = int(m.group(num), 0)
            yield "off-by-one", start, end, str(value + 1)
            if value > 0:
                yield "off-by-one", start, end, str(value - 1)
    for m in _ARITH.finditer(masked):
        start, end = m.start(2), m.end(2)
        if start in seen or re.search(r"\b(return|case)$", masked[max(0, m.start() - 7):m.start()]):
            continue  # a unary minus: `return -1`
        value = int(m.group(2), 0)
        yield "off-by-one", start, end, str(value + 1)
        if value > 0:
            yield "off-by-one", start, end, str(value - 1)


_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def droppable(name: str) -> bool:
    """Whether call-drop removes a call of `name` (see DROPPABLE_*)."""
    return (name in DROPPABLE_NAMES or any(p in name for p in DROPPABLE_PIECES)
            or any(w in name.split("_") for w in DROPPABLE_WORDS))


def _call_drops(text: str, masked: str) -> Iterator[tuple[str, int, int, str]]:
    for m in _CALL.finditer(masked):
        if not droppable(m.group(1)) or not _statement_start(masked, m.start()):
            continue
        close = match_forward(masked, m.end() - 1)
        if close < 0:
            continue
        semi = close + 1
        while semi < len(masked) and masked[semi].isspace():
            semi += 1
        if semi < len(masked) and masked[semi] == ";":
            yield "call-drop", m.start(), semi + 1, ";"


_LABEL = re.compile(r"(?:^|[;{}])\s*(?:[A-Za-z_]\w*|default|case\s+[^;:?]+)\s*:\s*$")


def _statement_start(masked: str, i: int) -> bool:
    """Whether a statement starts at i: after `;`, `{`, `}`, `else`, a label, or the `)` of an
    if/while/for head."""
    j = i - 1
    while j >= 0 and masked[j].isspace():
        j -= 1
    if j < 0 or masked[j] in ";{}":
        return True
    if masked[j] == ":":
        return _LABEL.search(masked, max(0, j - 200), j + 1) is not None
    if masked[j] == ")":
        k = match_backward(masked, j)
        return k > 0 and re.search(r"\b(if|while|for)\s*$", masked[max(0, k - 20):k]) is not None
    return re.search(r"\belse$", masked[max(0, j - 5):j + 1]) is not None


_ERRCODE = re.compile(r"(?:\breturn\s+|(?<![=!<>])=\s*)(-E[A-Z0-9]+)\b(?=\s*;)")


def _errcodes(masked: str) -> Iterator[tuple[str, int, int, str]]:
    for m in _ERRCODE.finditer(masked):
        yield "errcode-zero", m.start(1), m.end(1), "0"
