"""Generation B (the bufring series v2, 10/14) in the guest: its wire layouts and constants
through the compiled offsetof check against a header of 10/14's shape, and the REGISTER and
COMMIT encoders of the bufring transport."""

from __future__ import annotations

from pathlib import Path

from guest.fuse import proto as P
from harness.abi_check import Mismatch, check_abi, guest_constants

DATA = Path(__file__).parent.parent / "data" / "uapi"
B_STRUCTS = ("fuse_uring_cmd_req", "fuse_uring_ent_in_out", "fuse_uring_req_header")


def _include(tmp_path: Path, header: str = "gen-b-v2.h") -> Path:
    inc = tmp_path / "include" / "linux"
    inc.mkdir(parents=True)
    (inc / "fuse.h").write_text("#include <stdint.h>\n" + (DATA / header).read_text())
    (inc / "io_uring.h").write_text("/* empty */\n")
    return inc.parent


def _b_layouts() -> dict:
    return {k: v for k, v in P.layouts("B").items() if k in B_STRUCTS}


def test_b_layouts_and_constants_match_a_10_14_shaped_header(tmp_path: Path) -> None:
    consts = {k: v for k, v in guest_constants("B").items() if k.startswith("FUSE_")}
    assert consts["FUSE_URING_BUFRING"] == 1
    assert check_abi(_include(tmp_path), "B", _b_layouts(), consts=consts) == []


def test_b_layouts_against_the_older_synthetic_b_header_differ(tmp_path: Path) -> None:
    """The pre-10/14 guess (padding[6], a u32 queue_depth at 28) is told apart."""
    got = check_abi(_include(tmp_path, "gen-b.h"), "B", _b_layouts())
    assert Mismatch("fuse_uring_cmd_req", "init.buf_size", "offset", 20, 24) in got
    assert Mismatch("fuse_uring_cmd_req", "init.queue_depth", "field_size", 2, 4) in got


def test_b_offsets_are_port_notes_section_5() -> None:
    cmd, ent = P.layouts("B")["fuse_uring_cmd_req"], P.layouts("B")["fuse_uring_ent_in_out"]
    assert cmd.size == 32 and cmd.fields["padding"] == (18, 2)
    assert cmd.fields["init.buf_size"] == (20, 4) and cmd.fields["init.queue_depth"] == (24, 2)
    assert "_align" not in cmd.fields
    assert ent.size == 32 and ent.fields["buf_id"] == (20, 2) and ent.fields["padding"] == (22, 2)
    # entry k's buf_id in the queue's headers area: 288 * k + 256 + 20
    assert P.URING_HDR_SIZE * 3 + P.URING_ENT_OFFSET + ent.fields["buf_id"][0] == 1140
