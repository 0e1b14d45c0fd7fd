"""Unit tests for harness.series: manifests, inputs, apply into scratch trees, ABI detection."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import ConfigError, MissingTool, SeriesError, UserError
from harness.series import (
    TRANSPORTS,
    SeriesApplyError,
    apply,
    detect_abi,
    load_manifest,
    load_ref,
    parse_abi,
    parse_series,
    supported,
)
from harness.series.amlog import ApplyFailure, hunks, name_hunk, parse_am_output
from harness.series.apply import base_commit_of

DATA = Path(__file__).resolve().parents[1] / "data"
SERIES = DATA / "series"
UAPI = DATA / "uapi"
GOOD = sorted((SERIES / "good").glob("000[12]-*.patch"))
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "T",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "T",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FUSE_HARNESS_PATCHES", raising=False)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A plain (non-git) toy kernel tree."""
    src = tmp_path / "src"
    shutil.copytree(SERIES / "toy", src)
    return src


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git toy tree with the base tagged `base` and one extra commit on top."""
    src = tmp_path / "repo"
    shutil.copytree(SERIES / "toy", src)
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "base")
    git(src, "tag", "base")
    (src / "NOTES").write_text("unrelated\n")
    git(src, "add", "NOTES")
    git(src, "commit", "-qm", "notes")
    return src


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def catalog(tmp_path: Path, name: str, rev: str, text: str, files: list[Path] = ()) -> Path:
    folder = tmp_path / "patches" / name / rev
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    (folder / "manifest.yaml").write_text(text)
    return folder / "manifest.yaml"


# --- manifests ---------------------------------------------------------------------------


def test_repo_catalog_lists_and_loads() -> None:
    refs = supported()
    for ref in (
        "kmbuf-zero-copy/v1",
        "kmbuf-zero-copy/v4",
        "bufring-zero-copy/v2",
        "linux-7.3-bufpool/landed",
        "canary/bufpool-idle-leak",
        "canary/add-bufpool-flags",
    ):
        assert ref in refs
    for ref in refs:
        spec = load_ref(ref)
        assert spec.ref == ref and set(spec.promises) <= set(TRANSPORTS)
    v4 = load_ref("kmbuf-zero-copy/v4")
    assert v4.cover == "20260116233044.1532965-1-joannelkoong@gmail.com"
    assert v4.msgid == v4.cover and base_commit_of(v4.base) == "b71e635feefc"
    landed = load_ref("linux-7.3-bufpool/landed")
    assert landed.landed and landed.base is None and "zero-copy" in landed.promises
    canary = load_ref("canary/bufpool-idle-leak")
    assert len(canary.patches) == 1 and canary.patches[0].is_file()


def test_manifest_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    m = catalog(tmp_path, "toy", "v1", "name: toy\nrevision: v1\npacthes: [a.patch]\n")
    with pytest.raises(ConfigError) as e:
        load_manifest(m)
    assert str(m) in e.value.message and "'pacthes'" in e.value.message


@pytest.mark.parametrize(
    "body, words",
    [
        ("name: toy\nrevision: v1\npromises: [bufpool, warp-drive]\n", ["promises", "warp-drive"]),
        ("revision: v1\n", ["missing key 'name'"]),
        ("name: other\nrevision: v1\n", ["does not match its folder"]),
        ("name: toy\nrevision: v1\npatches: [nope.patch]\n", ["no file 'nope.patch'"]),
        ("name: toy\nrevision: v1\npatches: b4\n", ["no 'cover'"]),
        ("name: toy\nrevision: v1\npatches: [a]\nmbox: b\n", ["exclude each other"]),
        ("- just\n- a list\n", ["expected a mapping"]),
    ],
)
def test_manifest_errors(tmp_path: Path, body: str, words: list[str]) -> None:
    m = catalog(tmp_path, "toy", "v1", body)
    with pytest.raises(ConfigError) as e:
        load_manifest(m)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_manifest_full(tmp_path: Path) -> None:
    m = catalog(
        tmp_path,
        "toy",
        "v1",
        (
            "name: toy\nrevision: v1\nsubject: toy pool\ncover: <1-a@b.c>\nbase: none\n"
            "prerequisites: [other/v2]\npromises: legacy iovec bufpool\napplies_to: linux-7.3\n"
            f"patches: [{GOOD[0].name}, {GOOD[1].name}]\n"
        ),
        GOOD,
    )
    spec = load_manifest(m)
    assert spec.cover == "1-a@b.c" and spec.base is None and spec.prerequisites == ("other/v2",)
    assert spec.promises == ("legacy", "iovec", "bufpool")
    assert [p.name for p in spec.patches] == [g.name for g in GOOD] and not spec.landed
    assert supported(tmp_path / "patches") == ["toy/v1"]


# --- input strings -----------------------------------------------------------------------


def test_parse_inputs(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mbox = parse_series(f"mbox:{SERIES / 'good.mbox'}")
    assert mbox.patches == (SERIES / "good.mbox",) and mbox.revision == "local"
    d = parse_series(f"dir:{SERIES / 'good'}")
    assert [p.name[:4] for p in d.patches] == ["0000", "0001", "0002"]
    g = parse_series(f"git:{repo}#base..main")
    assert (g.git_repo, g.git_range, g.base) == (repo, "base..main", "base")
    monkeypatch.chdir(repo)
    assert parse_series("git:base..HEAD").git_repo == repo
    for text in (
        "msgid:<20260402162840.2989717-1-joannelkoong@gmail.com>",
        "<20260402162840.2989717-1-joannelkoong@gmail.com>",
        "msgid:https://lore.kernel.org/r/20260402162840.2989717-1-joannelkoong@gmail.com/",
        "https://lore.kernel.org/linux-fsdevel/20260402162840.2989717-1-joannelkoong@gmail.com/",
    ):
        assert parse_series(text).msgid == "20260402162840.2989717-1-joannelkoong@gmail.com"
    assert parse_series("series:kmbuf-zero-copy/v4").ref == "kmbuf-zero-copy/v4"
    assert parse_series("kmbuf-zero-copy/v2").ref == "kmbuf-zero-copy/v2"
    assert parse_series("bufring-zero-copy").ref == "bufring-zero-copy/v2"


@pytest.mark.parametrize(
    "text, words",
    [
        ("bogus:thing", "cannot read series"),
        ("mbox:/nonexistent/x.mbox", "is not a file"),
        ("dir:/nonexistent", "no *.patch files"),
        ("git:/nonexistent#a..b", "not a git tree"),
        ("git:.#justone", "expected a range"),
        ("msgid:no-at-sign", "not a message-id"),
        ("series:nope/v9", "unknown series"),
        ("kmbuf-zero-copy", "give a revision"),
        ("mbox:", "nothing after"),
    ],
)
def test_parse_errors(text: str, words: str) -> None:
    with pytest.raises(SeriesError) as e:
        parse_series(text)
    assert words in str(e.value)


def test_msgid_without_b4(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(Path(shutil.which("git")).parent) + ":" + str(tmp_path / "nobin"))
    if shutil.which("b4"):
        pytest.skip("b4 is installed next to git")
    with pytest.raises(MissingTool) as e:
        apply(plain, parse_series("msgid:1-x@example.com"), tmp_path / "work")
    assert "apt-get install b4" in e.value.hint and "--series mbox:FILE" in e.value.hint


def test_msgid_b4_fails(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "b4").write_text(
        "#!/bin/sh\necho 'Looking up https://lore.kernel.org/...' >&2\n"
        "echo 'Unable to reach lore.kernel.org' >&2\nexit 1\n"
    )
    (fake / "b4").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(SeriesError) as e:
        apply(plain, parse_series("msgid:1-x@example.com"), tmp_path / "work")
    assert "Unable to reach" in e.value.message and "--series mbox:FILE" in e.value.hint


# --- apply -------------------------------------------------------------------------------


def test_apply_plain_tree(plain: Path, tmp_path: Path) -> None:
    before = snapshot(plain)
    spec = parse_series(f"dir:{SERIES / 'good'}")
    done = apply(plain, spec, tmp_path / "work")
    assert snapshot(plain) == before and not (plain / ".git").exists()
    assert [(r.number, r.status, r.subject) for r in done.patches] == [
        (1, "applied", "pool: ignore out-of-range ids in pool_put"),
        (2, "applied", "uapi: add the buffer pool commands"),
    ]
    assert done.head == done.patches[-1].commit and done.tree.is_relative_to(tmp_path / "work")
    assert "id >= p->nr" in (done.tree / "src/pool.c").read_text()
    assert detect_abi(done.tree).has("bufpool") and not detect_abi(plain).has("bufpool")
    again = apply(plain, spec, tmp_path / "work")
    assert again.reused and again.head == done.head and again.tree == done.tree
    # same patches as an mbox with a cover letter: same commits (fixed committer identity)
    mbox = apply(plain, parse_series(f"mbox:{SERIES / 'good.mbox'}"), tmp_path / "work")
    assert mbox.head == done.head and [r.file for r in mbox.patches] == ["good.mbox #2", "good.mbox #3"]


def test_apply_git_source(repo: Path, tmp_path: Path) -> None:
    refs, head = git(repo, "show-ref"), git(repo, "rev-parse", "HEAD")
    before = snapshot(repo)
    spec = load_manifest(
        catalog(
            tmp_path,
            "toy",
            "v1",
            (f"name: toy\nrevision: v1\nbase: base\npatches: [{GOOD[0].name}, {GOOD[1].name}]\n"),
            GOOD,
        )
    )
    done = apply(repo, spec, tmp_path / "work")
    assert snapshot(repo) == before  # before any `git status` here, which may rewrite .git/index
    assert done.base_commit == git(repo, "rev-parse", "base").strip()
    assert not (done.tree / "NOTES").exists() and len(done.patches) == 2
    assert git(repo, "show-ref") == refs and git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == "" and len(git(repo, "worktree", "list").splitlines()) == 1
    # a range from the same tree: base defaults to A
    rng = apply(repo, parse_series(f"git:{repo}#base..main"), tmp_path / "work")
    assert [r.subject for r in rng.patches] == ["notes"] and (rng.tree / "NOTES").is_file()


def test_apply_bad_base(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SeriesError) as e:
        apply(repo, parse_series(f"dir:{SERIES / 'good'}"), tmp_path / "work", base="deadbeef1234")
    assert "deadbeef1234" in e.value.message


def test_apply_conflict_names_patch_file_and_hunk(plain: Path, tmp_path: Path) -> None:
    before = snapshot(plain)
    with pytest.raises(SeriesApplyError) as e:
        apply(plain, parse_series(f"dir:{SERIES / 'broken'}"), tmp_path / "work")
    err = e.value
    assert "patch 3/3" in err.message and '"pool: add pool_used"' in err.message
    assert "0003-pool-add-pool_used.patch" in err.message and "src/pool.c hunk #1" in err.message
    assert err.failure.reason == "3-way merge conflict" and err.failure.file == "src/pool.c"
    assert [r.status for r in err.results] == ["applied", "applied", "failed"]
    assert err.log_path.is_file() and "CONFLICT" in err.log_path.read_text()
    assert snapshot(plain) == before
    tree = err.log_path.parent / "tree"
    assert git(tree, "status", "--porcelain") == ""  # am was aborted cleanly
    assert not (tree / git(tree, "rev-parse", "--git-path", "rebase-apply").strip()).exists()


def test_apply_no_index_then_later_patches_not_applied(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = SERIES / "pool-used-no-index.patch"
    catalog(
        tmp_path,
        "toy",
        "v1",
        (f"name: toy\nrevision: v1\npatches: [{GOOD[0].name}, {bad.name}, {GOOD[1].name}]\n"),
        [*GOOD, bad],
    )
    monkeypatch.setenv("FUSE_HARNESS_PATCHES", str(tmp_path / "patches"))
    with pytest.raises(SeriesApplyError) as e:
        apply(plain, parse_series("toy/v1"), tmp_path / "work")
    f = e.value.failure
    assert "patch 2/3" in e.value.message and f.file == "src/pool.c"
    assert f.hunk and f.hunk.startswith("hunk #1 (@@ -14,7 +14,7 @@") and "preimage blob is unknown" in f.reason
    assert [r.status for r in e.value.results] == ["applied", "failed", "not-applied"]


def test_apply_prerequisites_first(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog(tmp_path, "pre", "v1", f"name: pre\nrevision: v1\npatches: [{GOOD[0].name}]\n", GOOD[:1])
    catalog(
        tmp_path,
        "top",
        "v1",
        f"name: top\nrevision: v1\nprerequisites: [pre/v1, landed/x]\npatches: [{GOOD[1].name}]\n",
        GOOD[1:],
    )
    catalog(tmp_path, "landed", "x", "name: landed\nrevision: x\n")
    monkeypatch.setenv("FUSE_HARNESS_PATCHES", str(tmp_path / "patches"))
    done = apply(plain, parse_series("top/v1"), tmp_path / "work")
    assert [(r.series, r.status) for r in done.patches] == [("pre/v1", "applied"), ("top/v1", "applied")]


def test_apply_landed_series_is_the_base(plain: Path, tmp_path: Path) -> None:
    done = apply(plain, load_ref("linux-7.3-bufpool/landed"), tmp_path / "work")
    assert done.patches == () and done.head == done.base_commit


def test_apply_missing_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        apply(tmp_path / "nope", load_ref("linux-7.3-bufpool/landed"), tmp_path / "work")


# --- git am output -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, reason, file, line",
    [
        (
            "error: patch failed: fs/fuse/dev_uring.c:1136\nerror: fs/fuse/dev_uring.c: patch does not apply\n",
            "does not apply",
            "fs/fuse/dev_uring.c",
            1136,
        ),
        (
            "CONFLICT (content): Merge conflict in fs/fuse/dev.c\nerror: Failed to merge in the changes.\n",
            "3-way merge conflict",
            "fs/fuse/dev.c",
            None,
        ),
        ("error: fs/fuse/new.c: does not exist in index\n", "file does not exist in the tree", "fs/fuse/new.c", None),
        ("Patch is empty.\n", "patch is empty", None, None),
        ("Patch format detection failed.\n", "not a mail or git patch", None, None),
        ("fatal: something odd\n", "something odd", None, None),
    ],
)
def test_parse_am_output(text: str, reason: str, file: str | None, line: int | None) -> None:
    f = parse_am_output(text)
    assert (f.reason, f.file, f.line) == (reason, file, line)


def test_name_hunk_nearest() -> None:
    text = (SERIES / "broken" / "0003-pool-add-pool_used.patch").read_text()
    assert [(h[0], h[1], h[2]) for h in hunks(text)] == [
        ("src/pool.c", 1, 14),
        ("src/pool.c", 2, 25),
        ("src/pool.h", 1, 7),
    ]
    named = name_hunk(text, ApplyFailure("does not apply", "src/pool.c", 26))
    assert named.hunk and named.hunk.startswith("hunk #2 ") and "src/pool.c hunk #2" in named.describe()


# --- ABI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, minor, gens, transports",
    [
        ("pre-uring.h", 40, (), ("legacy",)),
        ("gen-a.h", 45, ("A",), ("legacy", "iovec")),
        ("gen-c.h", 46, ("A", "C"), ("legacy", "iovec", "bufpool", "bufpool-registered", "zero-copy")),
        ("gen-b.h", 45, ("A", "B"), ("legacy", "iovec", "zero-copy", "bufring", "pinned-headers", "pinned-buffers")),
        ("gen-b-buf-ring.h", 45, ("A", "B"), ("legacy", "iovec", "bufring")),
        ("gen-b-v2.h", 45, ("A", "B"), ("legacy", "iovec", "bufring")),
        ("gen-d.h", 45, ("A", "D"), ("legacy", "iovec", "kmbuf", "kmbuf-zero-copy")),
    ],
)
def test_parse_abi(header: str, minor: int, gens: tuple[str, ...], transports: tuple[str, ...]) -> None:
    p = parse_abi((UAPI / header).read_text())
    assert (p.minor, p.generations, p.transports) == (minor, gens, transports)
    assert all(p.why(t) for t in transports)


def test_bufring_v2_shape_is_the_evidence_and_the_minor_is_not_used() -> None:
    """10/14 keeps minor 45: B is told by its flag and struct shape, never by the minor."""
    text = (UAPI / "gen-b-v2.h").read_text()
    p = parse_abi(text)
    assert p.why("bufring") == "FUSE_URING_BUFRING + init.buf_size + init.queue_depth + ent_in_out.buf_id"
    assert p.ring_generation == "B" and p.missing(["legacy", "iovec", "bufring"]) == ()
    # the flag without 10/14's structs: generation B, but nothing the guest's bufring can speak
    bare = parse_abi(text.replace("uint16_t buf_id;", "uint16_t pad0;"))
    assert "B" in bare.generations and not bare.has("bufring")
    assert parse_abi((UAPI / "gen-a.h").read_text()).ring_generation == "A"
    assert parse_abi((UAPI / "gen-c.h").read_text()).ring_generation == "C"
    assert parse_abi((UAPI / "gen-d.h").read_text()).ring_generation == "D"


def test_missing_promises() -> None:
    a = parse_abi((UAPI / "gen-a.h").read_text())
    c = parse_abi((UAPI / "gen-c.h").read_text())
    promised = load_ref("linux-7.3-bufpool/landed").promises
    assert c.missing(promised) == ()
    assert a.missing(promised) == ("bufpool", "bufpool-registered", "zero-copy")
    assert c.missing(load_ref("kmbuf-zero-copy/v4").promises) == ("kmbuf", "kmbuf-zero-copy")
    with pytest.raises(UserError, match="unknown transport"):
        a.missing(["teleport"])


def test_detect_abi_reads_tree(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        detect_abi(tmp_path)
    assert detect_abi(SERIES / "toy").transports == ("legacy", "iovec")


def test_plain_tree_edit_makes_new_base(plain: Path, tmp_path: Path) -> None:
    spec = parse_series(f"dir:{SERIES / 'good'}")
    first = apply(plain, spec, tmp_path / "work")
    header = plain / "src/pool.h"
    header.write_text(header.read_text() + "/* edited */\n")
    second = apply(plain, spec, tmp_path / "work")
    assert not second.reused and second.base_commit != first.base_commit
    assert (second.tree / "src/pool.h").read_text().endswith("/* edited */\n")
    assert git(second.tree, "status", "--porcelain") == ""


def test_apply_for_target(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    from harness.series import apply_for_target

    tree, ident = apply_for_target(plain, "tree:toy", f"dir:{SERIES / 'good'}")
    assert tree.is_relative_to(tmp_path / "cache" / "series") and ident.startswith("series:good/local:")
    assert detect_abi(tree).has("bufpool")
