"""The guest scenarios' payload patterns (built at import, so they must be cheap under TCG),
and the host-side byte compilation that spares the guest compiling its modules."""

from __future__ import annotations

import os
from pathlib import Path

from guest.edge import background, lies
from harness.vm.control import GUEST_PYTHON, byte_compile


def test_page_pattern_is_the_per_byte_formula():
    for size in (1, 4095, 4096, 4097, 3 * 4096 + 123, 64 << 10):
        assert background.page_pattern(size) == bytes((i * 31 + (i >> 12)) & 0xFF for i in range(size))
    body = background.BODY
    assert len(body) == background.SIZE == 2 << 20
    for i in (0, 4095, 4096, 1 << 20, (2 << 20) - 1):  # spot checks over the whole 2 MiB
        assert body[i] == (i * 31 + (i >> 12)) & 0xFF
    assert bytes((i * 7) & 0xFF for i in range(256 * 1024)) == lies.BIG


def test_byte_compile_writes_the_guest_interpreters_pyc(tmp_path: Path):
    (tmp_path / "guest" / "sub").mkdir(parents=True)
    (tmp_path / "guest" / "sub" / "mod.py").write_text("X = 1\n")
    assert os.path.exists(GUEST_PYTHON), f"{GUEST_PYTHON} runs the guest package; the host needs it"
    assert byte_compile(tmp_path)
    assert list((tmp_path / "guest" / "sub" / "__pycache__").glob("mod.cpython-*.pyc"))
