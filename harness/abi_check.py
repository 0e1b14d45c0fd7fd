"""Compare the guest's wire layouts with a kernel's uapi headers.

`render_program(layouts, consts)` writes a C program printing sizeof/offsetof for
every struct and field in the guest's layout table, and the value of every uapi
constant the guest hard-codes (pure). `check_abi(dir, generation)` compiles it with
`cc -I dir` (a kernel build's usr/include from `make O=BUILD headers`), runs it and
returns the mismatches. Fields, structs or constants the header does not have are
reported as absent, not as a compile failure.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from guest.fuse import proto
from guest.layout import StructLayout
from guest.uring import abi

HEADERS = ("stddef.h", "stdint.h", "stdio.h", "sys/uio.h", "linux/types.h", "linux/time_types.h",
           "linux/fuse.h", "linux/io_uring.h")
Check = tuple[str, "str | None"]  # (struct, field) ; field None = sizeof(struct)
CONST = "#define"  # the `struct` of a constant's Check: (CONST, NAME)


class AbiCheckError(Exception):
    """The probe program could not be built or run for a reason other than layout."""


@dataclass(frozen=True)
class Mismatch:
    """One difference between the guest's table and the C headers."""

    struct: str
    field: str | None
    kind: str  # "size", "offset", "field_size", "absent"
    expected: int | None
    actual: int | None

    def __str__(self) -> str:
        where = f"struct {self.struct}" + (f".{self.field}" if self.field else "")
        if self.struct == CONST:
            where = f"constant {self.field}"
        if self.kind == "absent":
            return f"{where}: absent from the headers (guest expects it)"
        return f"{where}: {self.kind} guest={self.expected} header={self.actual}"


def guest_layouts(generation: str) -> dict[str, StructLayout]:
    """The guest's full layout table for an ABI generation ("A", "B", "C" or "D")."""
    return {**proto.layouts(generation), **abi.layouts(generation)}


def guest_constants(generation: str) -> dict[str, int]:
    """C name -> value of every fuse.h / io_uring.h constant the guest hard-codes."""
    return {**proto.constants(generation), **abi.constants(generation)}


def _render(layouts: Mapping[str, StructLayout], skip: frozenset,
            consts: Mapping[str, int] | None = None) -> tuple[str, dict[int, Check]]:
    lines = [f"#include <{h}>" for h in HEADERS]
    lines += ["", "int main(void)", "{"]
    where: dict[int, Check] = {}
    for name in sorted(consts or {}):
        if (CONST, name) in skip:
            continue
        where[len(lines) + 1] = (CONST, name)
        lines.append(f'\tprintf("K {name} %llu\\n", (unsigned long long)({name}));')
    for name in sorted(layouts):
        if (name, None) in skip:
            continue
        t = f"struct {name}"
        where[len(lines) + 1] = (name, None)
        lines.append(f'\tprintf("S {name} %zu\\n", sizeof({t}));')
        for field in sorted(layouts[name].fields):
            if (name, field) in skip:
                continue
            where[len(lines) + 1] = (name, field)
            lines.append(f'\tprintf("F {name} {field} %zu %zu\\n", offsetof({t}, {field}), '
                         f"sizeof((({t} *)0)->{field}));")
    lines += ["\treturn 0;", "}", ""]
    return "\n".join(lines), where


def render_program(layouts: Mapping[str, StructLayout],
                   consts: Mapping[str, int] | None = None) -> str:
    """C source printing `S struct size`, `F struct field offset size` and
    `K NAME value` lines."""
    return _render(layouts, frozenset(), consts)[0]


def _compile(src: str, include: Path, out: Path, cc: str) -> tuple[int, str]:
    c_file = out.with_suffix(".c")
    c_file.write_text(src)
    proc = subprocess.run([cc, "-std=gnu11", "-w", "-I", str(include), "-o", str(out),
                           str(c_file)], capture_output=True, text=True)
    return proc.returncode, proc.stderr


def check_abi(uapi_include_dir: Path, generation: str,
              layouts: Mapping[str, StructLayout] | None = None,
              cc: str = "cc", consts: Mapping[str, int] | None = None) -> list[Mismatch]:
    """Compile and run the probe against uapi_include_dir; return the mismatches.

    Without `layouts` the guest's whole table for `generation` is checked, and with
    neither `layouts` nor `consts` its constants too (`guest_constants`)."""
    if consts is None and layouts is None:
        consts = guest_constants(generation)
    layouts = dict(layouts if layouts is not None else guest_layouts(generation))
    consts = dict(consts or {})
    include = Path(uapi_include_dir)
    if not (include / "linux" / "fuse.h").is_file():
        raise AbiCheckError(f"{include}/linux/fuse.h not found (run make headers)")
    skip: set[Check] = set()
    absent: list[Mismatch] = []
    with tempfile.TemporaryDirectory(prefix="fh-abi-") as tmp:
        exe = Path(tmp) / "abi_probe"
        for _ in range(50):
            src, where = _render(layouts, frozenset(skip), consts)
            rc, err = _compile(src, include, exe, cc)
            if rc == 0:
                break
            bad = {int(m) for m in re.findall(rf"{re.escape(exe.name)}\.c:(\d+):\d+: error",
                                              err)}
            hits = {where[n] for n in bad if n in where}
            if not hits:
                raise AbiCheckError(f"{cc} failed:\n{err[-2000:]}")
            for struct, field in sorted(hits, key=lambda c: (c[0], c[1] or "")):
                if (struct, None) in skip:
                    continue
                skip.add((struct, field))
                if struct == CONST:
                    absent.append(Mismatch(CONST, field, "absent", consts[field], None))
                elif field is None:  # the whole struct is missing
                    skip.update((struct, f) for f in layouts[struct].fields)
                    absent.append(Mismatch(struct, None, "absent", layouts[struct].size,
                                           None))
                else:
                    absent.append(Mismatch(struct, field, "absent",
                                           layouts[struct].fields[field][0], None))
        else:
            raise AbiCheckError("too many compile rounds")
        proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise AbiCheckError(f"abi probe exited {proc.returncode}: {proc.stderr}")
    return absent + compare(layouts, proc.stdout, consts)


def compare(layouts: Mapping[str, StructLayout], output: str,
            consts: Mapping[str, int] | None = None) -> list[Mismatch]:
    """Mismatches between the table and the probe's output lines (pure)."""
    out: list[Mismatch] = []
    for line in output.splitlines():
        parts = line.split()
        if parts[:1] == ["K"] and consts is not None:
            name, value = parts[1], int(parts[2])
            if value != consts[name]:
                out.append(Mismatch(CONST, name, "value", consts[name], value))
        elif parts[:1] == ["S"]:
            name, size = parts[1], int(parts[2])
            if size != layouts[name].size:
                out.append(Mismatch(name, None, "size", layouts[name].size, size))
        elif parts[:1] == ["F"]:
            name, field, off, size = parts[1], parts[2], int(parts[3]), int(parts[4])
            want_off, want_size = layouts[name].fields[field]
            if off != want_off:
                out.append(Mismatch(name, field, "offset", want_off, off))
            if size != want_size:
                out.append(Mismatch(name, field, "field_size", want_size, size))
    return out
