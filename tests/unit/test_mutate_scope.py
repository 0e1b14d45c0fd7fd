"""harness.mutate.scope: series-added lines on a tiny git repo, file/function scope, the sample."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.mutate import scope as sc

BASE = "int f(int n)\n{\n\tif (n < 1)\n\t\treturn -EINVAL;\n\treturn 0;\n}\n"
HEAD = ("int f(int n)\n{\n\tif (n < 1)\n\t\treturn -EINVAL;\n\tif (n > 8)\n\t\treturn -E2BIG;\n\treturn 0;\n}\n"
        "/* if (a < b) return -EIO; */\nint g(int n)\n{\n\treturn n >= 2;\n}\n")


def git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    git(tmp_path, "init", "-q")
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "a.c").write_text(BASE)
    (tmp_path / "README").write_text("x\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    base = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "fs" / "a.c").write_text(HEAD)
    (tmp_path / "fs" / "b.h").write_text("static inline int h(int x)\n{\n\treturn x < 3;\n}\n")
    (tmp_path / "README").write_text("x\nif (a < b)\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "series")
    return tmp_path, base, git(tmp_path, "rev-parse", "HEAD")


def test_added_lines_are_the_plus_lines_of_c_files(repo: tuple[Path, str, str]) -> None:
    tree, base, head = repo
    assert sc.added_lines(tree, base, head) == {"fs/a.c": {5, 6, 9, 10, 11, 12, 13}, "fs/b.h": {1, 2, 3, 4}}


def test_series_scope_mutates_only_added_lines(repo: tuple[Path, str, str]) -> None:
    tree, base, head = repo
    found = sc.candidates(tree, sc.Scope("series", base=base, head=head))
    assert {(m.file, m.line) for m in found} == {("fs/a.c", 5), ("fs/a.c", 6), ("fs/a.c", 12), ("fs/b.h", 3)}
    assert {m.function for m in found} == {"f", "g", "h"}
    assert not any(m.line == 3 and m.file == "fs/a.c" for m in found)  # the base's own check


def test_series_without_c_lines_is_a_scope_error(repo: tuple[Path, str, str]) -> None:
    tree, _, head = repo
    with pytest.raises(sc.ScopeError, match="adds no line"):
        sc.candidates(tree, sc.Scope("series", base=head, head=head))


def test_file_and_function_scope(repo: tuple[Path, str, str]) -> None:
    tree, _, _ = repo
    whole = sc.candidates(tree, sc.Scope("file", "fs/a.c"))
    only_g = sc.candidates(tree, sc.Scope("file", "fs/a.c", "g"))
    assert {m.function for m in whole} == {"f", "g"}
    assert {m.function for m in only_g} == {"g"} and {m.line for m in only_g} == {12}
    with pytest.raises(sc.ScopeError, match="no such function") as exc:
        sc.candidates(tree, sc.Scope("file", "fs/a.c", "gg"))
    assert "did you mean: g" in (exc.value.hint or "")
    with pytest.raises(sc.ScopeError, match="no such file"):
        sc.candidates(tree, sc.Scope("file", "fs/missing.c"))


@pytest.mark.parametrize("bad", ["/etc/x.c", "../x.c", "fs/a.py", ""])
def test_bad_file_arguments(bad: str) -> None:
    with pytest.raises(sc.ScopeError):
        sc.check_file_arg(bad)


def test_sample_is_fixed_by_the_seed_and_extends_with_max(repo: tuple[Path, str, str]) -> None:
    tree, _, _ = repo
    every = sc.candidates(tree, sc.Scope("file", "fs/a.c"))
    a = sc.select(every, 7, 3)
    assert a == sc.select(list(reversed(every)), 7, 3)
    assert sc.select(every, 7, 5)[:3] == a
    assert sorted(m.id for m in sc.select(every, 7, None)) == sorted(m.id for m in every)


def test_parse_added_skips_deleted_files() -> None:
    diff = ("diff --git a/x.c b/x.c\ndeleted file mode 100644\n--- a/x.c\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"
            "diff --git a/y.c b/y.c\n--- a/y.c\n+++ b/y.c\n@@ -3,0 +4,2 @@\n+c\n+d\n@@ -9 +11 @@\n-e\n+f\n")
    assert sc.parse_added(diff) == {"y.c": {4, 5, 11}}
