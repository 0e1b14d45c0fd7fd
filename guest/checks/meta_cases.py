"""Namespace and metadata cases: dirs, rename, unlink, xattrs, truncate, statfs."""

from __future__ import annotations

import errno
import os
import shutil

from guest.checks.context import Ctx, Skip, expect, pattern
from guest.fuse.replies import dirent_size

#: Bytes the kernel asks a READDIR(PLUS) to fill for a glibc readdir(): fs/fuse/readdir.c
#: fuse_readdir_uncached (7.2, 7.3) clamps getdents64's count to [PAGE_SIZE, max_pages pages],
#: and glibc's opendir sizes its buffer max(st_blksize, 32 KiB) (the server's blksize is 4096).
READDIR_REPLY = 32768
#: Entry names in the big directory are NAME_MAX long, so the fewest entries fill a reply.
LONG_NAME = 255


def many_entries(scale: int = 1) -> int:
    """Entries in dir_tree's big directory: the READDIRPLUS reply that starts the listing holds
    "." and ".." and 79 entries of LONG_NAME bytes (408 bytes each: fuse_entry_out, fuse_dirent,
    the name, 8-byte aligned), so 8 more take a second reply with entries; times scale."""
    per_reply = (READDIR_REPLY - 2 * dirent_size(1, True)) // dirent_size(LONG_NAME, True)
    return (per_reply + 8) * scale


def _entry(i: int) -> str:
    head = f"entry-{i:04d}-"
    return head + "x" * (LONG_NAME - len(head))


def _read(path: str, mode: str = "r") -> str | bytes:
    with open(path, mode) as f:
        return f.read()


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


def _raises(code: int, fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        expect(exc.errno == code, f"{fn.__name__}{args}: errno {exc.errno}, want {code}")
        return
    raise AssertionError(f"{fn.__name__}{args} succeeded, want errno {code}")


def dir_tree(ctx: Ctx) -> None:
    """mkdir a 3-level tree, list it (readdir and ls -l), remove it bottom-up; list a directory
    whose listing takes more than one READDIR(PLUS) reply.

    The tree is 2 x 2 x 2 (formerly 3 x 4 x 5): two siblings at each level are enough for
    listings with more than one name, os.walk and the bottom-up removal (rmdir refused with
    ENOTEMPTY before it); `ls -la` lists a bottom directory. The big directory has
    many_entries() subdirectories (87, formerly 100 files of 27-byte names, which fit one
    32 KiB reply on 7.x: fuse_readdir_uncached no longer sends one page at a time), made with
    mkdirat() so each costs LOOKUP + MKDIR only; os.listdir() and `ls -a` list it (formerly
    `ls -la`: its lstat and ACL getxattr calls walk the path again for every entry, about 12
    requests each, over 1000 for the directory, most of dir_tree's 12-26 s under TCG, for the
    per-entry path the bottom directory's `ls -la` takes too). Path proof: the server's READDIR
    + READDIRPLUS requests during os.listdir() (counters snapshots) are at least 3: two replies
    with entries and the empty one that ends the listing; else "not exercised".
    """
    root = ctx.path("tree")
    names = set()
    for a in range(2):
        for b in range(2):
            d = os.path.join(root, f"a{a}", f"b{b}")
            os.makedirs(d)
            for c in range(2):
                with open(os.path.join(d, f"f{c}"), "w") as f:
                    f.write(f"{a}{b}{c}")
        names.add(f"a{a}")
    expect(set(os.listdir(root)) == names, f"listdir {sorted(os.listdir(root))}")
    many, n = ctx.path("many"), many_entries(ctx.scale)
    os.mkdir(many)
    fd = os.open(many, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            os.mkdir(_entry(i), dir_fd=fd)
    finally:
        os.close(fd)
    before = ctx.requests("READDIR", "READDIRPLUS")
    got = sorted(os.listdir(many))
    listing = ctx.requests("READDIR", "READDIRPLUS") - before
    expect(len(got) == n and got[0] == _entry(0), f"big dir lists {len(got)} of {n}")
    expect(listing >= 3, f"not exercised: listing {n} entries took {listing} READDIR(PLUS) "
           "requests, so one reply held them all (want a second reply with entries)")
    ctx.diag(f"dir_tree: {n} entries listed in {listing} READDIR(PLUS) requests")
    if shutil.which("ls"):
        out = ctx.run(["ls", "-a", many])
        expect(out.count("entry-") == n, f"ls -a listed {out.count('entry-')} of {n} entries")
        out = ctx.run(["ls", "-la", os.path.join(root, "a1", "b1")])
        expect(all(f" f{c}\n" in out for c in range(2)), f"ls -la missed entries: {out!r}")
    _raises(errno.ENOTEMPTY, os.rmdir, root)
    _raises(errno.EEXIST, os.mkdir, root)
    walked = sum(len(files) for _, _, files in os.walk(root))
    expect(walked == 8, f"os.walk found {walked} files")
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for f in files:
            os.unlink(os.path.join(dirpath, f))
        for d in dirs:
            os.rmdir(os.path.join(dirpath, d))
    os.rmdir(root)
    expect(not os.path.exists(root), "tree still exists")


def rename_unlink(ctx: Ctx) -> None:
    """rename file/dir, replace a target, RENAME_NOREPLACE semantics, unlink."""
    a, b, c = ctx.path("ra"), ctx.path("rb"), ctx.path("rc")
    for p, text in ((a, "A"), (b, "B")):
        with open(p, "w") as f:
            f.write(text)
    os.rename(a, c)
    expect(not os.path.exists(a) and _read(c) == "A", "rename a->c")
    os.replace(c, b)
    expect(_read(b) == "A" and not os.path.exists(c), "rename over existing")
    os.mkdir(ctx.path("rd1"))
    os.mkdir(ctx.path("rd2"))
    os.rename(b, ctx.path("rd1", "moved"))
    os.rename(ctx.path("rd1"), ctx.path("rd2", "sub"))
    expect(_read(ctx.path("rd2", "sub", "moved")) == "A", "dir rename")
    os.unlink(ctx.path("rd2", "sub", "moved"))
    _raises(errno.ENOENT, os.stat, ctx.path("rd2", "sub", "moved"))
    _raises(errno.ENOENT, os.unlink, ctx.path("rd2", "sub", "moved"))
    fd = os.open(ctx.path("open-unlinked"), os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"still here")
    os.unlink(ctx.path("open-unlinked"))
    expect(os.pread(fd, 10, 0) == b"still here", "open-unlinked read")
    os.close(fd)
    os.rmdir(ctx.path("rd2", "sub"))
    os.rmdir(ctx.path("rd2"))


def xattrs(ctx: Ctx) -> None:
    """setxattr / getxattr / listxattr / removexattr incl. a 4 KiB value."""
    p = ctx.path("xattr-file")
    _touch(p)
    big = pattern(4000, ctx.seed)
    try:
        os.setxattr(p, "user.small", b"v1")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) and ctx.backend == "passthrough":
            raise Skip(f"backing fs has no user xattrs: {exc}") from None
        raise
    os.setxattr(p, "user.big", big)
    expect(os.getxattr(p, "user.small") == b"v1", "getxattr small")
    expect(os.getxattr(p, "user.big") == big, "getxattr big")
    names = set(os.listxattr(p))
    expect({"user.small", "user.big"} <= names, f"listxattr {names}")
    _raises(errno.EEXIST, os.setxattr, p, "user.small", b"x", os.XATTR_CREATE)
    os.setxattr(p, "user.small", b"v2", os.XATTR_REPLACE)
    expect(os.getxattr(p, "user.small") == b"v2", "replace")
    os.removexattr(p, "user.small")
    _raises(errno.ENODATA, os.getxattr, p, "user.small")
    expect("user.small" not in os.listxattr(p), "removed name still listed")


def truncate(ctx: Ctx) -> None:
    """Grow and shrink with truncate/ftruncate; grown bytes read as zeros."""
    p = ctx.path("trunc")
    data = pattern(100000, ctx.seed)
    with open(p, "wb") as f:
        f.write(data)
    os.truncate(p, 5000)
    expect(_read(p, "rb") == data[:5000], "shrink")
    os.truncate(p, 300000)
    got = _read(p, "rb")
    expect(got[:5000] == data[:5000] and got[5000:] == bytes(295000), "grow zero-fill")
    with open(p, "r+b") as f:
        f.truncate(1)
    expect(os.stat(p).st_size == 1 and _read(p, "rb") == data[:1], "ftruncate")
    with open(p, "wb") as f:  # O_TRUNC
        f.write(b"new")
    expect(_read(p, "rb") == b"new", "O_TRUNC reopen")


def statfs(ctx: Ctx) -> None:
    """statvfs answers with sane numbers; also stat of root and access()."""
    s = os.statvfs(ctx.mnt)
    expect(s.f_bsize > 0 and s.f_blocks > 0, f"statvfs {s}")
    expect(os.access(ctx.mnt, os.R_OK | os.W_OK | os.X_OK), "access(mnt)")
    if shutil.which("df"):
        ctx.run(["df", ctx.mnt])
