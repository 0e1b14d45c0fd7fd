"""harness.abi_check: program rendering (pure) and compiled checks on synthetic headers."""

from __future__ import annotations

from pathlib import Path

from guest.fuse import proto
from harness.abi_check import Mismatch, check_abi, compare, guest_layouts, render_program

DATA = Path(__file__).parent.parent / "data" / "uapi"
URING_STRUCTS = ("fuse_uring_ent_in_out", "fuse_uring_cmd_req")


def _include(tmp_path: Path, header: str) -> Path:
    inc = tmp_path / "include" / "linux"
    inc.mkdir(parents=True)
    (inc / "fuse.h").write_text("#include <stdint.h>\n" + (DATA / header).read_text())
    (inc / "io_uring.h").write_text("/* empty */\n")
    return inc.parent


def _subset(generation: str) -> dict:
    return {k: v for k, v in proto.layouts(generation).items() if k in URING_STRUCTS}


def test_render_program_lists_every_struct_and_field() -> None:
    layouts = guest_layouts("C")
    src = render_program(layouts)
    assert "#include <linux/fuse.h>" in src and "#include <linux/io_uring.h>" in src
    assert "sizeof(struct fuse_uring_cmd_req)" in src
    assert "offsetof(struct fuse_uring_cmd_req, bufpool.uaddr)" in src
    assert "offsetof(struct io_uring_sqe, cmd_op)" in src
    assert src.count("offsetof(") == sum(len(v.fields) for v in layouts.values())
    assert render_program(layouts) == src  # deterministic


def test_compare_reports_size_offset_and_field_size() -> None:
    layouts = _subset("C")
    out = ("S fuse_uring_cmd_req 24\nF fuse_uring_cmd_req qid 16 2\n"
           "F fuse_uring_ent_in_out offset 24 4\nF fuse_uring_ent_in_out flags 0 4\n")
    got = compare(layouts, out)
    assert Mismatch("fuse_uring_cmd_req", None, "size", 40, 24) in got
    assert Mismatch("fuse_uring_ent_in_out", "offset", "offset", 20, 24) in got
    assert Mismatch("fuse_uring_ent_in_out", "flags", "field_size", 8, 4) in got
    assert len(got) == 3


def test_gen_c_layouts_match_gen_c_header(tmp_path: Path) -> None:
    assert check_abi(_include(tmp_path, "gen-c.h"), "C", _subset("C")) == []


def test_gen_c_layouts_against_gen_a_header_report_absent_fields(tmp_path: Path) -> None:
    got = check_abi(_include(tmp_path, "gen-a.h"), "C", _subset("C"))
    absent = {(m.struct, m.field) for m in got if m.kind == "absent"}
    assert ("fuse_uring_ent_in_out", "offset") in absent
    assert ("fuse_uring_cmd_req", "bufpool.uaddr") in absent
    assert ("fuse_uring_cmd_req", "ent_zero_copy_buf_index") in absent
    assert Mismatch("fuse_uring_cmd_req", None, "size", 40, 24) in got
    assert "absent from the headers" in str(next(m for m in got if m.kind == "absent"))


def test_missing_struct_is_absent_not_an_error(tmp_path: Path) -> None:
    layouts = _subset("A")
    layouts["fuse_no_such_struct"] = proto.Wire("fuse_no_such_struct", [("x", "Q")]).layout()
    got = check_abi(_include(tmp_path, "gen-a.h"), "A", layouts)
    assert got == [Mismatch("fuse_no_such_struct", None, "absent", 8, None)]
