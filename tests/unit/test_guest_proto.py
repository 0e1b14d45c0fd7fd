"""guest.fuse.proto, guest.negotiate and guest.server, pure (no kernel)."""

from __future__ import annotations

import errno
import os

import pytest

from guest.counters import Counters
from guest.fuse import proto as P
from guest.fuse import replies as R
from guest.fuse.fs import MemoryFs
from guest.negotiate import SERVER_MINOR, negotiate
from guest.server import Server


def _req(op: int, nodeid: int, body: bytes, unique: int = 2) -> bytes:
    return P.IN_HEADER.pack(P.IN_HEADER.size + len(body), op, unique, nodeid, 0, 0, 1, 0,
                            0) + body


def _init_in(minor: int, flags: int, flags2: int) -> bytes:
    return P.INIT_IN.pack(7, minor, 131072, flags, flags2, bytes(44))


@pytest.mark.parametrize("gen,cmd,ent", [("A", 24, 32), ("B", 32, 32), ("C", 40, 32)])
def test_sizes_per_generation(gen: str, cmd: int, ent: int) -> None:
    lay = P.layouts(gen)
    assert lay["fuse_uring_cmd_req"].size == cmd
    assert lay["fuse_uring_ent_in_out"].size == ent
    assert lay["fuse_uring_req_header"].size == P.URING_HDR_SIZE == 288
    assert lay["fuse_uring_req_header"].fields["ring_ent_in_out"] == (256, 32)
    assert (lay["fuse_in_header"].size, lay["fuse_out_header"].size) == (40, 16)
    assert lay["fuse_init_in"].size == lay["fuse_init_out"].size == 64
    assert lay["fuse_attr"].size == 88 and lay["fuse_entry_out"].size == 128
    assert lay["fuse_direntplus"].fields["dirent"] == (128, 24)


def test_gen_c_only_fields() -> None:
    c, a = P.layouts("C"), P.layouts("A")
    assert c["fuse_uring_ent_in_out"].fields["offset"] == (20, 4)
    assert "offset" not in a["fuse_uring_ent_in_out"].fields
    assert c["fuse_uring_cmd_req"].fields["ent_zero_copy_buf_index"] == (24, 2)
    assert c["fuse_uring_cmd_req"].fields["bufpool.len"] == (32, 4)
    with pytest.raises(ValueError):
        P.layouts("E")


def test_split_devfuse_and_malformed() -> None:
    h, a0, rest = P.split_devfuse(_req(P.Op.LOOKUP, 1, b"name\0"))
    assert (h.opcode, h.nodeid, a0, rest) == (P.Op.LOOKUP, 1, b"", b"name\0")
    h, a0, rest = P.split_devfuse(_req(P.Op.MKDIR, 1, P.MKDIR_IN.pack(0o755, 0o22) + b"d\0"))
    assert len(a0) == 8 and rest == b"d\0"
    with pytest.raises(ValueError):
        P.split_devfuse(b"\0" * 10)
    with pytest.raises(ValueError):  # len field disagrees with the buffer
        P.split_devfuse(_req(P.Op.LOOKUP, 1, b"x\0")[:-1])
    with pytest.raises(ValueError):  # WRITE body shorter than fuse_write_in
        P.split_devfuse(_req(P.Op.WRITE, 1, b"short"))


def test_split_names() -> None:
    assert P.split_names(b"a\0b\0tail", 2) == ([b"a", b"b"], b"tail")
    with pytest.raises(ValueError):
        P.split_names(b"noterminator", 1)


def test_reply_and_dirents() -> None:
    r = P.pack_devfuse_reply(42, -errno.ENOENT)
    assert P.OUT_HEADER.unpack(r) == (16, -errno.ENOENT, 42)
    attr = R.Attr(5, 10, 1, 1.5, 2.0, 3.0, 0o100644, 1, 0, 0)
    data, n = R.pack_dirents([(b"a", None, 5, 8), (b"bcdefghij", None, 6, 4)], 4096,
                             False, base=2)
    assert n == 2 and len(data) == 32 + 40
    assert P.DIRENT.unpack(data) == (5, 3, 1, 8)
    assert P.DIRENT.unpack(data, 32)[1] == 4
    data, n = R.pack_dirents([(b"a", attr, 5, 8), (b"b", None, 6, 8)], 160, True)
    assert n == 1 and len(data) == 160
    assert P.ENTRY_OUT.unpack(data)[0] == 5
    assert P.max_payload_size(65536, 32) == 131072 == P.max_payload_size(4096, 32)
    assert P.max_payload_size(4096, 1) == 8192


def test_negotiate_uring_and_minor() -> None:
    flags2 = (P.OVER_IO_URING | P.HAS_IO_URING_BUFPOOL) >> 32
    payload, init = negotiate(_init_in(46, 0xFFFFFFFF, flags2), True, 65536, 64)
    out = P.INIT_OUT.unpack(payload)
    assert out[0:2] == (7, 46)
    assert out[3] & P.INIT_EXT and out[3] & P.MAX_PAGES
    assert out[10] == P.OVER_IO_URING >> 32  # reply flags2: only OVER_IO_URING
    assert init.offered_uring and init.offered_bufpool and init.over_io_uring
    assert init.max_pages == 64 and init.max_payload_sz == 64 * 4096
    payload, init = negotiate(_init_in(45, 0xFFFFFFFF, P.OVER_IO_URING >> 32), False,
                              131072, None)
    assert P.INIT_OUT.unpack(payload)[1] == 45 and P.INIT_OUT.unpack(payload)[10] == 0
    assert not init.over_io_uring and init.max_payload_sz == 131072
    assert negotiate(_init_in(50, 0, 0), True, 4096, None)[1].negotiated_minor == SERVER_MINOR
    _, init = negotiate(_init_in(46, P.INIT_EXT, 0), True, 4096, None)
    assert not init.over_io_uring  # not offered -> never echoed


def test_negotiate_max_background_and_extra_flags() -> None:
    payload, _ = negotiate(_init_in(46, 0xFFFFFFFF, 0), True, 131072, 4, max_background=4, extra=P.ASYNC_DIO)
    out = P.INIT_OUT.unpack(payload)
    assert (out[4], out[5]) == (4, 3)  # max_background, congestion_threshold (3/4 of it)
    assert out[3] & P.ASYNC_DIO
    payload, _ = negotiate(_init_in(46, 0xFFFFFFFF & ~P.ASYNC_DIO, 0), True, 131072, None)
    out = P.INIT_OUT.unpack(payload)
    assert (out[4], out[5]) == (64, 48) and not out[3] & P.ASYNC_DIO  # defaults; never unoffered


def test_server_dispatch_roundtrip() -> None:
    c = Counters("legacy")
    s = Server(MemoryFs(), c)

    def call(op: int, node: int, body: bytes) -> tuple[int, bytes]:
        h, a0, rest = P.split_devfuse(_req(op, node, body))
        res = s.dispatch(h, a0, rest)
        assert res is not None
        return res

    err, out = call(P.Op.CREATE, 1, P.CREATE_IN.pack(os.O_RDWR, 0o644, 0o022, 0) + b"f\0")
    assert err == 0 and len(out) == P.ENTRY_OUT.size + P.OPEN_OUT.size
    ino, fh = P.ENTRY_OUT.unpack(out)[0], P.OPEN_OUT.unpack(out, P.ENTRY_OUT.size)[0]
    err, out = call(P.Op.WRITE, ino, P.WRITE_IN.pack(fh, 3, 5, 0, 0, 0, 0) + b"hello")
    assert (err, P.WRITE_OUT.unpack(out)[0]) == (0, 5)
    err, out = call(P.Op.READ, ino, P.READ_IN.pack(fh, 0, 100, 0, 0, 0, 0))
    assert out == b"\0\0\0hello"
    err, out = call(P.Op.GETATTR, ino, P.GETATTR_IN.pack(0, 0, 0))
    assert P.ATTR_OUT.unpack(out)[3 + 1] == 8  # attr.size
    assert call(P.Op.LOOKUP, 1, b"missing\0")[0] == -errno.ENOENT
    assert call(P.Op.STATX, 1, bytes(24))[0] == -errno.ENOSYS
    assert call(999, 1, b"")[0] == -errno.ENOSYS
    err, out = call(P.Op.SETXATTR, ino, P.SETXATTR_IN_COMPAT.pack(2, 0) + b"user.a\0hi")
    assert err == 0
    assert call(P.Op.GETXATTR, ino, P.GETXATTR_IN.pack(0, 0) + b"user.a\0")[1] == \
        P.GETXATTR_OUT.pack(2, 0)
    assert call(P.Op.GETXATTR, ino, P.GETXATTR_IN.pack(1, 0) + b"user.a\0")[0] == \
        -errno.ERANGE
    assert call(P.Op.LISTXATTR, ino, P.GETXATTR_IN.pack(64, 0))[1] == b"user.a\0"
    err, out = call(P.Op.READDIR, 1, P.READ_IN.pack(0, 0, 4096, 0, 0, 0, 0))
    assert err == 0 and b"f" in out
    err, out = call(P.Op.READDIR, 1, P.READ_IN.pack(0, 3, 4096, 0, 0, 0, 0))
    assert (err, out) == (0, b"")  # offset past the end
    assert call(P.Op.RMDIR, 1, b"f\0")[0] == -errno.ENOTDIR
    assert s.dispatch(*P.split_devfuse(_req(P.Op.FORGET, ino, P.FORGET_IN.pack(1)))) is None
    assert call(P.Op.WRITE, ino, P.WRITE_IN.pack(fh, 0, 9, 0, 0, 0, 0) + b"x")[0] == \
        -errno.EINVAL  # payload shorter than size: malformed, not a crash
    snap = c.snapshot()
    assert snap["errors"]["malformed"] == 1 and snap["errors"]["handler"]["ENOENT"] == 1


def test_counters_report_fallback_honestly() -> None:
    c = Counters("bufpool")
    c.request("devfuse", "LOOKUP")
    assert c.snapshot()["transport_used"] == "devfuse"
    c.doc["uring"]["ready"] = True
    c.request("io_uring", "GETATTR", qid=1)
    c.pool_take(1, 0)
    c.pool_take(1, 131072)
    c.pool_release(1, 0)
    snap = c.snapshot()
    assert snap["transport_used"] == "io_uring" and snap["per_queue"] == {"1": 1}
    assert snap["pool"] == {"high_water": 2, "distinct_offsets": 2,
                            "per_queue_high_water": {"1": 2}}
    c.cqe_error(-errno.ENOTCONN, teardown=True)
    c.cqe_error(-errno.EINVAL)
    assert c.snapshot()["errors"]["cqe"] == {"EINVAL": 1}


def test_passthrough_backend_roundtrip(tmp_path) -> None:  # noqa: ANN001
    from guest.fuse.passthrough import PassthroughFs

    fs = PassthroughFs(str(tmp_path))
    attr, fh = fs.create(P.ROOT_ID, b"f", 0o644, os.O_WRONLY | os.O_APPEND, 0, 0)
    assert fs.write(attr.ino, fh, 4, b"data") == 4  # pwrite honours the offset
    assert fs.read(attr.ino, fh, 0, 10) == b"\0\0\0\0data"
    assert fs.backing_fd(fh) is not None
    d = fs.mkdir(P.ROOT_ID, b"d", 0o755, 0, 0)
    fs.rename(P.ROOT_ID, b"f", d.ino, b"g", 0)
    assert fs.lookup(d.ino, b"g").ino == attr.ino
    assert fs.getattr(attr.ino).size == 8  # path of the node followed the rename
    assert {n for n, _, _ in fs.readdir(d.ino)} == {b".", b"..", b"g"}
    fs.release(attr.ino, fh)
    assert fs.backing_fd(fh) is None
    with pytest.raises(OSError) as exc:
        fs.rmdir(P.ROOT_ID, b"d")
    assert exc.value.errno == errno.ENOTEMPTY
