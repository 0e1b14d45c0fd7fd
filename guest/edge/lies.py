"""Payload sizes that lie (issue class "hostile server", catalog U7 generalised).

A reply's `ent_in_out.payload_sz` is the server's word for how many payload bytes the kernel
copies back. Here the server claims more than the entry's payload buffer holds: one page past
it, and 0xffffffff (a u32 that wraps any `offset + size` sum), for READ, READDIR, LISTXATTR,
GETXATTR and STATFS (variable and fixed-size replies). Correct: the client gets an error, or
the right value when the kernel bounds the copy itself; never wrong bytes, never a hang; the
entry keeps serving. Then the other direction: a connection whose INIT reply allows only
4 KiB per request (max_write 4096, max_pages 1) still carries a 256 KiB write and read intact,
split by the kernel into requests that fit.

Path proof: the lie is applied to the first reply of that opcode that is not an error (so
os.getxattr's first, 128-byte GETXATTR, answered ERANGE, does not use it up), and the case
fails as `not exercised` unless such a reply carried it; the client's outcome must be the lying
reply's own: the READ is one O_DIRECT pread (a buffered read would retry a failed readahead
with a fresh READ), and a success after a later GETXATTR/LISTXATTR retry does not count.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os

from guest.edge import LIE_OPS, LIES
from guest.edge.clients import Client
from guest.edge.core import Ctx
from guest.edge.served import Served
from guest.fuse import proto as P

BODY = bytes(range(256)) * 64  # 16 KiB
BIG = bytes((i * 7) & 0xFF for i in range(256)) * 1024  # 256 KiB, byte i = (i * 7) & 0xFF
XATTR_OPS = ("GETXATTR", "LISTXATTR")
#: Errors a client may get for a reply the kernel refuses.
CLEAN = (errno.EIO, errno.EINVAL, errno.EFAULT, errno.ERANGE, errno.E2BIG, errno.EPROTO)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return _sha(f.read())


def _read_direct(path: str) -> str:
    """One O_DIRECT pread of the whole file (16 KiB): one READ request, so the client's outcome
    is that READ's (a buffered read retries a failed readahead with a READ of its own)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, len(BODY))
        n = os.preadv(fd, [buf], 0)
        return _sha(buf[:n])
    finally:
        os.close(fd)


def _new_file(srv: Served, name: str, data: bytes) -> int:
    """A file the server's memory file system holds before any client asks; its inode."""
    ino = srv.fs.create(P.ROOT_ID, name.encode(), 0o644, 0, 0, 0)[1]
    srv.fs.write(ino, ino, 0, data)
    return ino


def _client_fn(srv: Served, op: str, tag: str):  # noqa: ANN202
    """(fn run by the client, the value a truthful server makes it return)."""
    fs, root = srv.fs, P.ROOT_ID
    if op == "READ":
        name = f"r-{tag}"
        _new_file(srv, name, BODY)
        return (lambda: _read_direct(srv.path(name))), _sha(BODY)
    if op == "READDIR":
        d = fs.mkdir(root, f"d-{tag}".encode(), 0o755, 0, 0).ino
        names = sorted(f"entry-{i:03}" for i in range(40))
        for n in names:
            fs.create(d, n.encode(), 0o644, 0, 0, 0)
        return (lambda: sorted(os.listdir(srv.path(f"d-{tag}")))), names
    name = f"x-{tag}"
    ino = _new_file(srv, name, b"")
    for i in range(8):
        fs.setxattr(ino, f"user.attr{i}".encode(), BODY[:512 * (i + 1)], 0)
    if op == "LISTXATTR":
        return (lambda: sorted(os.listxattr(srv.path(name)))), sorted(f"user.attr{i}" for i in range(8))
    if op == "GETXATTR":
        return (lambda: _sha(os.getxattr(srv.path(name), "user.attr7"))), _sha(BODY[:4096])
    return (lambda: os.statvfs(srv.mnt).f_blocks), fs.statfs()[0]


def payload_lies(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Each opcode's first reply claims a payload_sz past the buffer; then every queue serves
    a fresh read; then a 4 KiB-per-request connection carries 256 KiB intact."""
    srv = Served(ctx, "lies", transport=args.transport, queue_depth=2)
    eng = srv.engine
    eng.auto = True
    ctx.diag(f"{args.transport}: payload buffer {eng.payload_size} bytes per entry, "
             f"{srv.conn.nr_queues} queues x 2 entries")
    for op in LIE_OPS:
        for lie in LIES:
            case = f"{op.lower()}_{lie}_clean"
            fn, want = _client_fn(srv, op, f"{op}-{lie}")
            claim = eng.payload_size + 4096 if lie == "page_past_buffer" else 0xFFFFFFFF
            n_err, n_log, n_lied = len(eng.ent_errors), len(eng.log), len(eng.lied)
            # listdir's first request is READDIRPLUS when FUSE_DO_READDIRPLUS was negotiated
            family = ("READDIR", "READDIRPLUS") if op == "READDIR" else (op,)
            eng.claim_payload.update(dict.fromkeys(family, claim))
            c = Client(ctx, case, fn, cpu=0)
            srv.pump(min(15.0, ctx.left()), c.done)
            for name in family:
                eng.claim_payload.pop(name, None)
            lied = [x for x in eng.lied[n_lied:] if x["op"] in family][:1]
            ok, why = c.verdict(want, CLEAN)
            errs = sorted({r for _, r, _ in eng.ent_errors[n_err:]})
            ops = [i["op"] for i in eng.log[n_log:]]
            # a later GETXATTR/LISTXATTR of the client is os.*xattr's retry after ERANGE: its answer
            # is not the lying reply's (a later READDIR is the listing going on, a READ is O_DIRECT)
            later = [i["op"] for i in eng.log[n_log:] if lied and op in XATTR_OPS and i["op"] == op
                     and i["unique"] > lied[0]["unique"]]
            if not lied:
                ok, why = False, f"not exercised: no {op} reply carried the claim (requests seen: {ops}); {why}"
            elif later and (c.poll(0.0) or {}).get("ok"):
                ok, why = False, (f"not exercised: the client's value came from a later {op} (unique > "
                                  f"{lied[0]['unique']}), not from the lying reply; {why}")
            ctx.result(case, ok, f"{op} reply (unique {lied[0]['unique'] if lied else '-'}) claiming payload_sz "
                                 f"{claim:#x}: {why}; "
                                 f"entry CQE errors {errs or 'none'}")
    for q in range(srv.conn.nr_queues):
        _new_file(srv, f"s-{q}", BODY)
    clients = [Client(ctx, f"after-{q}", lambda q=q: _read(srv.path(f"s-{q}")), cpu=q)
               for q in range(srv.conn.nr_queues)]
    srv.pump(min(20.0, ctx.left()), lambda: all(c.done() for c in clients))
    outs = [c.poll(0.0) for c in clients]
    ctx.result("entries_keep_serving", all(o and o.get("ok") and o["value"] == _sha(BODY) for o in outs),
               f"a fresh read per queue after the lies: {outs}; {len(eng.ent_errors)} entry CQE errors")

    small = Served(ctx, "lies-small", transport=args.transport, queue_depth=2, max_write=4096,
                   max_pages=1)
    big = _new_file(small, "big", b"")
    small.engine.auto = True

    def write_read() -> str:
        path = small.path("big")
        with open(path, "r+b") as f:
            f.write(BIG)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return _sha(os.pread(fd, len(BIG) + 1, 0))
        finally:
            os.close(fd)

    c = Client(ctx, "small", write_read, cpu=0)
    small.pump(min(60.0, ctx.left()), c.done)
    out = c.poll(0.0)
    stored = small.fs.read(big, big, 0, len(BIG) + 1)
    sizes = sorted({i["payload_sz"] for i in small.engine.log if i["op"] in ("WRITE", "READ")})
    ok = bool(out and out.get("ok") and out["value"] == _sha(BIG) and stored == BIG)
    # path proof: the write really went as requests of at most 4 KiB (64 or more WRITEs)
    writes = [i["payload_sz"] for i in small.engine.log if i["op"] == "WRITE"]
    split = len(writes) >= len(BIG) // 4096 and max(writes, default=0) <= 4096
    ok = ok and split
    ctx.result("small_max_write_split_intact", ok,
               f"max_write {small.init.max_write}, max_pages {small.init.max_pages}, max_payload_sz "
               f"{small.init.max_payload_sz}: client {str(out)[:120]}; server holds {len(stored)} bytes "
               f"({'intact' if stored == BIG else 'DIFFERENT'}); READ/WRITE payload sizes seen {sizes[:8]}; "
               f"{len(writes)} WRITEs"
               + ("" if split else " (not exercised: the write was not split into requests of 4 KiB)"))
