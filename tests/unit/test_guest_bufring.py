"""Generation B (the bufring series v2, 10/14) in the guest: its wire layouts and constants
through the compiled offsetof check against a header of 10/14's shape, and the REGISTER and
COMMIT encoders of the bufring transport."""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path

import pytest

from guest.counters import Counters
from guest.fuse import proto as P
from guest.transports.base import Options, SetupError
from guest.transports.bufring import B_ENT, BufringTransport, commit_req, register_req
from guest.transports.engine import Entry
from guest.uring.ring import Ring
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


# -- the bufring transport's encoders and buffer bookkeeping (no kernel) ------------------------

def test_register_req_places_flag_qid_and_init() -> None:
    cmd = register_req(1, 131072, 8)
    assert len(cmd) == 32
    assert int.from_bytes(cmd[0:8], "little") == P.URING_BUFRING == 1
    assert cmd[8:16] == bytes(8) and cmd[16:18] == b"\x01\x00" and cmd[18:20] == b"\0\0"
    assert int.from_bytes(cmd[20:24], "little") == 131072 and cmd[24:26] == b"\x08\x00"
    assert cmd[26:] == bytes(6)
    assert register_req(0, 8192, 2, flags=2)[0:8] == (2).to_bytes(8, "little")  # unknown bit
    commit = commit_req(3, 0x1234)
    assert commit[0:8] == bytes(8) and int.from_bytes(commit[8:16], "little") == 0x1234
    assert commit[16:18] == b"\x03\x00" and commit[18:] == bytes(14)


def _transport(nbufs: int = 2, depth: int = 4, queues: int = 2, ring: bool = False) -> BufringTransport:
    """A bufring transport with its memory and bookkeeping (alloc()), no kernel."""
    t = BufringTransport.__new__(BufringTransport)
    t.counters, t.opts = Counters("bufring"), Options(queue_depth=depth, pool_bufs=nbufs)
    t.payload_size, t.depth, t.nr_queues = 8192, depth, queues
    t.entries = [Entry(i, i // depth, i % depth) for i in range(queues * depth)]
    for e in t.entries:
        e.live = True
    t.alloc()
    if ring:
        try:
            t.ring = Ring(16)
        except OSError as exc:
            pytest.skip(f"io_uring unavailable on this host: {exc}")
        t.devfd = -1
    return t


def _deliver(t: BufringTransport, e: Entry, op: int, buf_id: int) -> tuple:
    """What the kernel writes into entry e's slot, then the transport's lookup."""
    P.IN_HEADER.pack_into(t.hdr, e.hdr_off, 80, op, 2, 1, 0, 0, 1, 0, 0)
    B_ENT.pack_into(t.hdr, e.hdr_off + P.URING_ENT_OFFSET, 0, 7, 0, buf_id, 0, 0)
    e.op = op
    return t.payload_loc(e, 0)


def test_alloc_lays_out_one_headers_area_and_one_payload_area_per_queue() -> None:
    t = _transport(nbufs=3, depth=4)
    e = t.entries[5]  # queue 1, entry 1
    assert (t.hdr_len, t.hdr_stride) == (4 * 288, 4096) and e.hdr_off == 4096 + 288 and e.slot == 1
    cmd, addr, n = t.register_cmd(e)
    iov = e.iov
    assert n == 2 and addr == ctypes.addressof(iov)
    assert (iov[0].iov_base, iov[0].iov_len) == (t.hdr_addr + 4096, 4 * 288)
    assert (iov[1].iov_base, iov[1].iov_len) == (t.payload_addr[1], 3 * 8192)
    assert cmd == register_req(1, 8192, 4) and t.fixed_args(e) == (0, 1)
    assert t.counters.snapshot()["generation"] == "B"
    with pytest.raises(SetupError, match="65535"):
        _transport(nbufs=65536)


def test_payload_at_buf_id_times_buf_size_and_no_buffer_without_payload() -> None:
    t = _transport(nbufs=2)
    e = t.entries[4]
    mm, off = _deliver(t, e, P.Op.LOOKUP, 1)
    assert mm is t.payload[1] and off == 8192 and t.held_key(e, 0, False) == 1
    mm, off = _deliver(t, e, P.Op.FLUSH, 0)  # buf_id 0 means "none" here (D5)
    assert mm is t.nobuf and t.held_key(e, 0, False) is None
    _deliver(t, e, P.Op.RELEASE, 1)  # a buffer id on a no-payload request: counted
    with pytest.raises(SetupError, match="buf_id 2 >= 2") as exc:
        _deliver(t, e, P.Op.GETATTR, 2)
    assert exc.value.errno == errno.ERANGE
    b = t.counters.snapshot()["bufring"]
    assert (b["payload"], b["no_payload"], b["unexpected"], b["bad_id"], b["ids"]) == (1, 1, 1, 1, {"1": [1]})


def test_a_buffer_delivered_to_two_busy_entries_is_shared() -> None:
    t = _transport(nbufs=2)
    _deliver(t, t.entries[0], P.Op.READ, 0)
    _deliver(t, t.entries[1], P.Op.READ, 0)  # D1: the lost/duplicated id of a full ring
    assert t.counters.snapshot()["bufring"]["shared"] == 1


def test_a_commit_with_every_buffer_held_marks_the_next_payload_request_waited() -> None:
    t = _transport(nbufs=1, depth=4, queues=1, ring=True)
    a, b = t.entries[0], t.entries[1]
    _deliver(t, a, P.Op.LOOKUP, 0)
    t.commit(a, 0, b"x" * 16)  # the one buffer held, three entries idle: a queued request waits
    assert a.gid in t.starved and a.gid not in t.busy
    _deliver(t, a, P.Op.GETATTR, 0)  # handed on with the same buffer
    t.commit(a, 0, b"")
    _deliver(t, b, P.Op.READ, 0)  # delivered to another entry: not through a starved commit
    doc = t.counters.snapshot()
    assert (doc["bufring"]["waited"], doc["bufring"]["kept"], doc["bufring"]["payload"]) == (1, 1, 3)
    assert t.held_key(b, 0, False) == 0 and t.busy == {b.gid}
    t.ring.close()
