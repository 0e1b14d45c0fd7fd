"""Wire-struct descriptions shared by the FUSE and io_uring layers.

A `Wire` is a little-endian struct built from (field, format) pairs, where a
format is a struct code ("Q", "I", "6s") or another Wire (a nested struct).
Every Wire and ctypes Structure can be described as a `StructLayout` (size,
field -> (offset, size)), which harness/abi_check.py compares to the C headers.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Union

FieldSpec = tuple[str, Union[str, "Wire"]]


@dataclass(frozen=True)
class StructLayout:
    """Size of a C struct and offset/size of the fields the guest relies on."""

    name: str
    size: int
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)


class Wire:
    """A packed little-endian C struct with explicit padding fields."""

    def __init__(self, name: str, fields: list[FieldSpec]) -> None:
        self.name = name
        self.fields = fields
        codes = "".join(f.code if isinstance(f, Wire) else f for _, f in fields)
        self.code = codes
        self.struct = struct.Struct("<" + codes)
        self.size = self.struct.size
        self.names = [n for n, _ in fields]
        # The struct's own methods, without a Python frame in between (a FUSE request packs
        # several of these): pack(*values) -> bytes and pack_into(buf, offset, *values) take
        # flat values (nested structs contribute their fields in order), raise struct.error.
        self.pack = self.struct.pack
        self.pack_into = self.struct.pack_into

    def unpack(self, buf: object, offset: int = 0) -> tuple:
        """Unpack from buf at offset; raises ValueError when buf is too short."""
        try:
            return self.struct.unpack_from(buf, offset)
        except struct.error as exc:
            raise ValueError(f"{self.name}: short buffer ({exc})") from None

    def layout(self, c_name: str | None = None) -> StructLayout:
        """Describe this struct (offsets of top-level fields only)."""
        out: dict[str, tuple[int, int]] = {}
        off = 0
        for name, fmt in self.fields:
            size = fmt.size if isinstance(fmt, Wire) else struct.calcsize("<" + fmt)
            if not name.startswith("_"):
                out[name] = (off, size)
            off += size
        return StructLayout(c_name or self.name, self.size, out)


def ctypes_layout(name: str, cls: type[ctypes.Structure],
                  extra: dict[str, tuple[int, int]] | None = None) -> StructLayout:
    """Describe a ctypes Structure; `extra` adds union aliases by C name."""
    fields = {}
    for fname, *_ in cls._fields_:
        if fname.startswith("_"):
            continue
        desc = getattr(cls, fname)
        fields[fname] = (desc.offset, desc.size)
    fields.update(extra or {})
    return StructLayout(name, ctypes.sizeof(cls), fields)
