"""Which FUSE-over-io-uring ABI a (patched) tree has, read from include/uapi/linux/fuse.h.

Generations (see shared/reference/fuse-uring-abi.md):
    A  FUSE_OVER_IO_URING, per-entry iovec REGISTER            -> iovec
    C  ADD_QUEUE/ADD_BUFPOOL, ent_zero_copy_buf_index (7.3)    -> bufpool, bufpool-registered, zero-copy
    B  FUSE_URING_BUFRING/PINNED_* REGISTER flags (v2, 14 p.)  -> bufring, pinned-headers, pinned-buffers, zero-copy
       (bufring needs 10/14's shape too: init.buf_size and init.queue_depth in fuse_uring_cmd_req,
       buf_id in fuse_uring_ent_in_out; FUSE_KERNEL_MINOR_VERSION stays 45, so the minor cannot tell)
    D  FUSE_URING_BUF_RING + init.queue_depth, kmbuf (v1-v4)   -> kmbuf, kmbuf-zero-copy
`legacy` (/dev/fuse read/write) is always there. Parsing is pure on the header text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SourceError, UserError

from .spec import TRANSPORTS

HEADER = "include/uapi/linux/fuse.h"
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_WORD = re.compile(r"\b[A-Za-z_]\w*\b")


@dataclass(frozen=True)
class AbiProfile:
    """What the header offers: protocol minor, generations, transports and why."""

    minor: int | None
    generations: tuple[str, ...]
    transports: tuple[str, ...]
    evidence: tuple[tuple[str, str], ...] = ()

    def has(self, transport: str) -> bool:
        """True when the kernel has `transport`."""
        return transport in self.transports

    def missing(self, promises: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """Promised transports this kernel lacks (the caller reports them as failures)."""
        bad = [p for p in promises if p not in TRANSPORTS]
        if bad:
            raise UserError(f"unknown transport {bad[0]!r}", f"choose from: {', '.join(TRANSPORTS)}")
        return tuple(p for p in promises if p not in self.transports)

    def why(self, transport: str) -> str | None:
        """The header symbol that made `transport` count as present."""
        return dict(self.evidence).get(transport)

    @property
    def ring_generation(self) -> str:
        """The newest ring generation the header has, for the layout check: "D" (kmbuf series),
        "C" (7.3), "B" (bufring series), else "A" (7.2, or no ring at all)."""
        return next((g for g in ("D", "C", "B") if g in self.generations), "A")


def detect_abi(tree: Path) -> AbiProfile:
    """Read `tree`/include/uapi/linux/fuse.h and classify it."""
    path = tree / HEADER
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror}", "is this the top of a kernel tree?") from None
    return parse_abi(text)


def parse_abi(text: str) -> AbiProfile:
    """Classify a fuse.h text (comments are ignored)."""
    code = _COMMENT.sub(" ", text)
    words = set(_WORD.findall(code))
    m = re.search(r"#\s*define\s+FUSE_KERNEL_MINOR_VERSION\s+(\d+)", code)
    minor = int(m.group(1)) if m else None
    ent = set(_WORD.findall(struct_body(code, "fuse_uring_ent_in_out")))
    req = set(_WORD.findall(struct_body(code, "fuse_uring_cmd_req")))

    found: dict[str, str] = {"legacy": "/dev/fuse"}
    gens: list[str] = []

    def first(names: tuple[str, ...], pool: set[str] = words) -> str | None:
        return next((n for n in names if n in pool), None)

    if sym := first(("FUSE_OVER_IO_URING", "FUSE_IO_URING_CMD_REGISTER")):
        gens.append("A")
        found["iovec"] = sym
    if sym := first(("FUSE_IO_URING_CMD_ADD_BUFPOOL", "FUSE_IO_URING_CMD_ADD_QUEUE")):
        gens.append("C")
        if "FUSE_IO_URING_CMD_ADD_BUFPOOL" in words:
            found["bufpool"] = found["bufpool-registered"] = "FUSE_IO_URING_CMD_ADD_BUFPOOL"
    # B and D both may spell a ring flag FUSE_URING_BUF_RING; B's entries carry buf_id/buf_size.
    b_shape = bool({"buf_id"} & ent or {"buf_size"} & req)
    if sym := first(("FUSE_URING_BUFRING",)) or (b_shape and first(("FUSE_URING_BUF_RING",))):
        gens.append("B")
        shape = [f for f, ok in (("init.buf_size", "buf_size" in req),
                                 ("init.queue_depth", "queue_depth" in req),
                                 ("ent_in_out.buf_id", "buf_id" in ent)) if ok]
        if len(shape) == 3:  # what the guest's bufring transport writes and reads
            found["bufring"] = f"{sym} + {' + '.join(shape)}"
        for flag, name in (
            ("FUSE_URING_PINNED_HEADERS", "pinned-headers"),
            ("FUSE_URING_PINNED_BUFFERS", "pinned-buffers"),
        ):
            if flag in words:
                found[name] = flag
    elif sym := first(("FUSE_URING_BUF_RING", "use_bufring")):
        gens.append("D")
        found["kmbuf"] = sym if "queue_depth" not in req else f"{sym} + init.queue_depth"
    zc = first(("ent_zero_copy_buf_index", "FOPEN_IO_URING_ZERO_COPY", "FUSE_URING_ZERO_COPY"))
    if zc is None and "D" in gens:
        zc = first(("zero_copy",), req)
    if zc and "D" in gens:  # D's zero-copy rides on the kmbuf ring: its own transport
        found["kmbuf-zero-copy"] = zc
    elif zc and len(gens) > (1 if "A" in gens else 0):
        found["zero-copy"] = zc
    transports = tuple(t for t in TRANSPORTS if t in found)
    return AbiProfile(minor, tuple(sorted(gens)), transports, tuple((t, found[t]) for t in transports))


def struct_body(code: str, name: str) -> str:
    """The text between the braces of `struct name { ... }` (nested braces included), or ''."""
    m = re.search(r"\bstruct\s+" + re.escape(name) + r"\s*\{", code)
    if not m:
        return ""
    depth, start = 1, m.end()
    for i in range(start, len(code)):
        c = code[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return code[start:i]
    return code[start:]
