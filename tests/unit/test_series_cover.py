"""Unit tests for what a series says about itself (harness.series.cover), on the posted kmbuf
mboxes and small samples, and for the apply-failure message built from it (toy tree, no kernel)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.series import SeriesApplyError, apply, parse_series
from harness.series.amlog import merge_failures, name_hunk, parse_am_output
from harness.series.cover import find_base, kind, numbering, parse_cover
from harness.series.inputs import collect_mails

SERIES = Path(__file__).resolve().parents[1] / "data" / "series"
BROKEN = sorted((SERIES / "broken").glob("*.patch"))


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FUSE_HARNESS_PATCHES", raising=False)


def mail(subject: str, body: str, msgid: str = "1-a@example.invalid") -> bytes:
    head = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: A <a@example.invalid>\n"
    return f"{head}Subject: {subject}\nMessage-ID: <{msgid}>\n\n{body}".encode()


DIFF = "---\n a | 1 +\n\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1,2 @@\n a\n+b\n"


# --- the posted mboxes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, base, msgid",
    [
        ("posted-v4.mbx", "b71e635feefc", "20260116233044.1532965-1-joannelkoong@gmail.com"),
        ("posted-v2.mbx", "40fbbd64bba6", "20251218083319.3485503-1-joannelkoong@gmail.com"),
    ],
)
def test_posted_mbox_cover_is_skipped_and_names_its_base(
    kmbuf_fixtures: Path, tmp_path: Path, name: str, base: str, msgid: str
) -> None:
    patches, cover = collect_mails(parse_series(f"mbox:{kmbuf_fixtures / name}"), tmp_path / "p")
    assert cover is not None and cover.subject == "fuse/io-uring: add kernel-managed buffer rings and zero-copy"
    assert cover.msgid == msgid and cover.base == base
    assert cover.said == f"This series is on top of commit {base} in the io-uring tree."
    assert [p.tag for p in patches] == [f"{n:02d}/25" for n in range(1, 26)]
    assert patches[0].subject == "io_uring/kbuf: refactor io_buf_pbuf_register() logic into generic helpers"
    assert patches[0].origin == f"{name} #2"  # mail #1, the cover, never reaches git am
    assert (tmp_path / "p" / "cover.mail").read_bytes().startswith(b"From ")


def test_ported_mbox_has_no_cover(kmbuf_fixtures: Path, tmp_path: Path) -> None:
    patches, cover = collect_mails(parse_series(f"mbox:{kmbuf_fixtures / 'ported-v4-on-7.2.mbx'}"), tmp_path / "p")
    # 13-17 are already in 7.2 and left out; the mails keep v4's own numbers
    assert cover is None and [p.tag for p in patches] == [f"{n:02d}/25" for n in (*range(1, 13), *range(18, 26))]


def test_posted_v4_patch_01_failure_is_read_as_file_and_hunk(kmbuf_fixtures: Path, tmp_path: Path) -> None:
    """git's own output for patch 01 on Debian 7.2 (am -3, then apply --check -v), parsed back."""
    patches, _ = collect_mails(parse_series(f"mbox:{kmbuf_fixtures / 'posted-v4.mbx'}"), tmp_path / "p")
    am = parse_am_output(
        "Applying: io_uring/kbuf: refactor io_buf_pbuf_register() logic into generic helpers\n"
        "Patch failed at 0001 io_uring/kbuf: refactor io_buf_pbuf_register() logic into generic helpers\n"
        "error: sha1 information is lacking or useless (io_uring/kbuf.c).\n"
        "error: could not build fake ancestor\n"
    )
    check = parse_am_output(
        "Checking patch io_uring/kbuf.c...\nerror: while searching for:\n\treturn IOU_COMPLETE;\n}\n"
        "error: patch failed: io_uring/kbuf.c:596\nerror: io_uring/kbuf.c: patch does not apply\n"
    )
    f = name_hunk(patches[0].path.read_text(), merge_failures(am, check))
    assert (f.file, f.line) == ("io_uring/kbuf.c", 596) and "preimage blob is unknown" in f.reason
    assert f.where() == (
        "io_uring/kbuf.c hunk #1 (@@ -596,55 +596,71 @@ int io_manage_buffers_legacy("
        "struct io_kiocb *req, unsigned int issue_flags))"
    )


# --- samples -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject, body, expected",
    [
        ("[PATCH v4 00/25] a series", "no diff here\n", "cover"),
        ("[PATCH v2 0/3] with an interdiff", "Interdiff against v1:\n" + DIFF, "cover"),
        ("[PATCH] just words", "no diff\n", "cover"),
        ("Re: [PATCH v4 03/25] x", "> quoted\n\n" + DIFF, "reply"),
        ("AW: [PATCH 1/2] x", "ok\n", "reply"),
        ("[PATCH v4 01/25] x", "msg\n" + DIFF, "patch"),
        ("[PATCH] x", "msg\n" + DIFF, "patch"),
    ],
)
def test_kind(subject: str, body: str, expected: str) -> None:
    assert kind(mail(subject, body)) == expected


@pytest.mark.parametrize(
    "subject, expected",
    [
        ("[PATCH v4 01/25] x", (1, 25)),
        ("[RFC PATCH net-next v2 3/7] x", (3, 7)),
        ("[PATCH 10/10] x", (10, 10)),
        ("[PATCH] x", None),
        ("x 1/2 in the words", None),
    ],
)
def test_numbering(subject: str, expected: tuple[int, int] | None) -> None:
    assert numbering(subject) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hi,\n\nThis series is on top of commit 40fbbd64bba6  in the\nio-uring tree.\n", "40fbbd64bba6"),
        (
            "Text.\n\nbase-commit: 0123456789abcdef0123456789abcdef01234567\n",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("It is based on v7.2-rc3. Thanks.\n", "v7.2-rc3"),
        ("These patches apply cleanly on top of for-next (a1b2c3d4e5f6).\n", "a1b2c3d4e5f6"),
        ("Rebased onto 7.3; see https://git.kernel.org/x/commit/?id=a1b2c3d4e5f6 for more.\n", None),
        ("[4] https://github.com/joannekoong/libfuse/commit/630db88e600fea515d62ef94d784988cefba05af\n", None),
        ("It is based on 1000000 runs.\n", None),
        ("No base named here.\n", None),
    ],
)
def test_find_base(text: str, expected: str | None) -> None:
    found = find_base(text)
    assert (found[0] if found else None) == expected


def test_base_commit_line_wins_over_prose() -> None:
    text = "This is on top of commit aaaaaaa1111111.\n\nbase-commit: bbbbbbb2222222\n"
    assert find_base(text) == ("bbbbbbb2222222", "base-commit: bbbbbbb2222222")
    assert find_base("This is on top of commit aaaaaaa1111111.\n", prose=False) is None


def test_parse_cover_decodes_quoted_printable() -> None:
    raw = mail("[PATCH 0/2] =?utf-8?q?caf=C3=A9?= pool", "").replace(
        b"\n\n",
        b"\nContent-Transfer-Encoding: quoted-printable\n\nThis series is on top of commit abc1234de=\nf56 in x.\n",
    )
    c = parse_cover(raw)
    assert (c.subject, c.msgid, c.base) == ("café pool", "1-a@example.invalid", "abc1234def56")


def test_collect_skips_cover_and_replies_and_reads_base_from_first_patch(tmp_path: Path) -> None:
    mbox = tmp_path / "s.mbox"
    first = mail("[PATCH 1/2] one", "msg\n" + DIFF + "\nbase-commit: 0123456789ab\n")
    mbox.write_bytes(
        mail("Re: [PATCH 0/2] s", "> hi\n") + b"\n" + first + b"\n" + mail("[PATCH 2/2] two", "msg\n" + DIFF)
    )
    patches, cover = collect_mails(parse_series(f"mbox:{mbox}"), tmp_path / "p")
    assert [(p.tag, p.subject) for p in patches] == [("1/2", "one"), ("2/2", "two")]
    assert cover is not None and (cover.subject, cover.base) == ("", "0123456789ab")


# --- the failure message (toy tree) ------------------------------------------------------


def cover_mbox(tmp_path: Path, cover_body: str) -> Path:
    """An mbox: a cover letter with `cover_body`, then the three `broken` patches (the third conflicts)."""
    mbox = tmp_path / "broken.mbox"
    cover = mail("[PATCH v3 0/3] toy pool", cover_body, msgid="77-toy@example.invalid")
    mbox.write_bytes(cover + b"\n" + b"".join(p.read_bytes() + b"\n" for p in BROKEN))
    return mbox


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(SERIES / "toy", src)
    return src


def test_failure_names_patch_hunk_cover_base_and_what_to_do(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "toy-ported.yaml").write_text("# the toy pool, ported; posted as 77-toy@example.invalid\n")
    (targets / "other.yaml").write_text("name: other\n")
    monkeypatch.setattr("harness.config.TARGETS_DIR", targets)
    mbox = cover_mbox(tmp_path, "Hi,\n\nThis series is on top of commit 5eed5eed5eed in the toy tree.\n")
    with pytest.raises(SeriesApplyError) as e:
        apply(plain, parse_series(f"mbox:{mbox}"), tmp_path / "work", source_id="tree:toy")
    err = e.value
    assert err.message.startswith('series broken/local: patch 3/3 "pool: add pool_used" does not apply: src/pool.c')
    assert "hunk #1 (@@ -14,7 +14,7 @@" in err.message and "3-way merge conflict" in err.message
    said = '(cover letter: "This series is on top of commit 5eed5eed5eed in the toy tree.")'
    assert f"Its base is 5eed5eed5eed {said}; this tree is tree:toy." in err.message
    assert err.base == "5eed5eed5eed" and "\n" not in err.message
    assert err.hint.startswith("use a tree at 5eed5eed5eed (--source path:TREE")
    assert "forward-ported to this source (--series mbox:FILE, or a target that names this series: " in err.hint
    assert "--target toy-ported)" in err.hint and "other" not in err.hint.split("git am log")[0]
    assert [r.status for r in err.results] == ["applied", "applied", "failed"]
    assert "toy pool" not in err.log_path.read_text()  # the cover was never given to git am


def test_failure_without_a_named_base_says_so(plain: Path, tmp_path: Path) -> None:
    mbox = cover_mbox(tmp_path, "Just a toy.\n")
    with pytest.raises(SeriesApplyError) as e:
        apply(plain, parse_series(f"mbox:{mbox}"), tmp_path / "work")
    assert e.value.base is None and "Its base" not in e.value.message
    assert e.value.hint.startswith("check that this tree is the base the series was made for; git am log: ")


def test_failed_tree_is_reset_not_copied_again(plain: Path, tmp_path: Path) -> None:
    mbox = cover_mbox(tmp_path, "Just a toy.\n")
    for _ in range(2):
        with pytest.raises(SeriesApplyError) as e:
            apply(plain, parse_series(f"mbox:{mbox}"), tmp_path / "work")
        tree = e.value.log_path.parent / "tree"
        marker = tree / "left-behind.o"
        assert not marker.exists()
        inode = tree.stat().st_ino
        marker.write_text("x")
    with pytest.raises(SeriesApplyError):
        apply(plain, parse_series(f"mbox:{mbox}"), tmp_path / "work")
    assert tree.stat().st_ino == inode and not marker.exists()


def test_failure_on_the_named_base_does_not_blame_the_base(plain: Path, tmp_path: Path) -> None:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=T", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=plain, env={**os.environ, **env}, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=plain, capture_output=True, text=True).stdout.strip()
    mbox = cover_mbox(tmp_path, f"Toy.\n\nbase-commit: {head}\n")
    with pytest.raises(SeriesApplyError) as e:
        apply(plain, parse_series(f"mbox:{mbox}"), tmp_path / "work")
    assert e.value.base == head and "Its base" not in e.value.message
    assert e.value.hint.startswith("check that this tree is the base the series was made for")
