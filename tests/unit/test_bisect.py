"""bisect: step classification, git bisect mapping, reproducer, ref validation and the loop on a toy repo."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness import bisect as B
from harness.cli import main
from harness.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def toy(tmp_path):
    """A repo with 6 commits; commit 4 ('break') introduces the bug (file BROKEN)."""
    repo = tmp_path / "linux"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    ids = []
    for n, name in enumerate(["one", "two", "three", "break", "five", "six"]):
        (repo / f"f{n}").write_text(name)
        if name == "break":
            (repo / "BROKEN").write_text("")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"commit {name}")
        ids.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "tag", "v-good", ids[0])
    return repo, ids


@pytest.mark.parametrize("tests,verdict", [
    (["PASS", "PASS"], "good"), (["PASS", "FAIL"], "bad"), (["ERROR", "FAIL"], "bad"), (["TIMEOUT"], "bad"),
    (["PASS", "ERROR"], "skip"), ([None], "skip"), (["SKIP", "SKIP"], "skip"), ([], "skip"),
    (["XFAIL"], "bad"), (["XPASS", "PASS"], "good"),
])
def test_classify(tests, verdict):
    assert B.classify(tests) == verdict


def test_git_bisect_run_exit_codes():
    assert B.EXIT == {"good": 0, "bad": 1, "skip": 125}


def test_case_verdict_picks_the_node():
    summary = {"cases": [{"nodeid": "tests/vm/t.py::a", "verdict": "PASS"},
                         {"nodeid": "tests/vm/t.py::b", "verdict": "FAIL"}]}
    assert B.case_verdict(summary, "tests/vm/t.py::b") == "FAIL"
    assert B.case_verdict(summary, "tests/vm/t.py::c") is None and B.case_verdict(None, "x") is None


def test_parse_bisect_output():
    sha = "a" * 40
    assert B.parse_bisect_output(f"{sha} is the first bad commit\ncommit {sha}\n") == (sha, [sha])
    assert B.parse_bisect_output("Bisecting: 2 revisions left to test after this (roughly 1 step)\n") == (None, [])
    text = f"There are only 'skip'ped commits left to test.\nThe first bad commit could be any of:\n{sha}\n{'b' * 40}\n"
    assert B.parse_bisect_output(text) == (None, [sha, "b" * 40])


def test_reproducer_text():
    text = B.reproducer(Path("/src/linux"), "v7.2", "HEAD", "tests/vm/t.py::test_x", 3, "v7.3", "default",
                        Path("/c/src"), Path("/c/build"), "c" * 40)
    lines = text.splitlines()
    assert lines[0] == (".venv/bin/fuse-harness bisect --tree /src/linux --good v7.2 --bad HEAD "
                        "--test tests/vm/t.py::test_x --repeat 3 --target v7.3 --profile default")
    assert lines[2] == f"git -C /c/src checkout --quiet --detach {'c' * 40}"
    assert lines[3].startswith("FUSE_HARNESS_BUILD_DIR=/c/build .venv/bin/python -m pytest tests/vm/t.py::test_x ")
    assert "--source path:/c/src" in lines[3]
    assert len(B.reproducer(Path("/t"), "a", "b", "n", 2, "v7.3", "default", Path("/w"), Path("/b"), None)
               .splitlines()) == 1


def test_validate_ok_and_resolves_refs(toy):
    repo, ids = toy
    assert B.validate(repo / ".", "v-good", "main") == (repo, ids[0], ids[-1])


def test_validate_errors(toy, tmp_path):
    repo, ids = toy
    (tmp_path / "plain").mkdir()
    with pytest.raises(B.BisectError, match="is not a git tree"):
        B.validate(tmp_path / "plain", "a", "b")
    with pytest.raises(B.BisectError, match="does not exist"):
        B.validate(tmp_path / "nope", "a", "b")
    with pytest.raises(B.BisectError, match=r"unknown ref 'v9' \(--good\)"):
        B.validate(repo, "v9", "main")
    with pytest.raises(B.BisectError, match=r"unknown ref 'nope' \(--bad\)"):
        B.validate(repo, "v-good", "nope")
    with pytest.raises(B.BisectError, match="is not an ancestor of --bad"):
        B.validate(repo, "main", "v-good")
    with pytest.raises(B.BisectError, match="are the same commit"):
        B.validate(repo, "main", ids[-1])
    assert issubclass(B.BisectError, UserError)


def test_cli_errors_exit_4(toy, capsys):
    repo, _ = toy
    assert main(["bisect", "--tree", str(repo), "--good", "main", "--bad", "v-good", "--test", "x"]) == 4
    assert "is not an ancestor" in capsys.readouterr().err


def _fake_steps(monkeypatch, ids, skipped):
    seen = []

    def evaluate(self, worktree, build_dir, run_dir, number):
        commit = git(worktree, "rev-parse", "HEAD")
        seen.append(commit)
        if commit == ids[skipped]:
            return B.Step(commit, B.SKIP, 1.0, [None], "build failed: pretend")
        tests = ["PASS", "FAIL"] if (worktree / "BROKEN").exists() else ["PASS", "PASS"]
        return B.Step(commit, B.classify(tests), 2.0, tests)

    monkeypatch.setattr(B.Bisection, "check_test", lambda self: None)
    monkeypatch.setattr(B.Bisection, "evaluate", evaluate)
    return seen


def test_loop_skips_next_to_the_culprit_leave_candidates(toy, tmp_path, monkeypatch):
    repo, ids = toy
    _fake_steps(monkeypatch, ids, skipped=2)
    result = B.Bisection(repo, "v-good", "main", "tests/vm/t.py::test_x", results=tmp_path / "results").run()
    assert result["first_bad"] is None
    assert [c["commit"] for c in result["candidates"]] == [ids[2], ids[3]]
    assert json.loads((Path(result["run_dir"]) / "metadata.json").read_text())["status"] == "FAIL"


def test_loop_on_toy_repo_finds_first_bad_and_leaves_the_repo_alone(toy, tmp_path, monkeypatch):
    """git bisect is driven in a private clone; a skip step is survived; bisect.json is written."""
    repo, ids = toy

    def state():
        return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"), sorted(os.listdir(repo))

    before = state()
    seen = _fake_steps(monkeypatch, ids, skipped=1)
    result = B.Bisection(repo, "v-good", "main", "tests/vm/t.py::test_x", results=tmp_path / "results").run()
    assert result["first_bad"] == {"commit": ids[3], "subject": "commit break"}
    assert seen[0] == ids[0] and result["good_end"]["verdict"] == "good"  # the good end, checked first
    seen = seen[1:]
    assert [s["commit"] for s in result["steps"]] == seen and all(c in ids for c in seen)
    assert [s["verdict"] for s in result["steps"]] == ["bad" if ids.index(c) >= 3 else "skip" if c == ids[1]
                                                       else "good" for c in seen]
    run_dir = Path(result["run_dir"])
    saved = json.loads((run_dir / "bisect.json").read_text())
    assert saved["first_bad"]["commit"] == ids[3] and saved["good"] == ids[0]
    assert saved["test"] == "tests/vm/t.py::test_x"
    assert ids[3] in (run_dir / "reproduce.sh").read_text()
    assert "git bisect start" in (run_dir / "bisect.log").read_text()
    assert json.loads((run_dir / "metadata.json").read_text())["status"] == "PASS"
    assert state() == before
    assert not (repo / ".git" / "BISECT_LOG").exists()
    # a second bisection reuses the private clone
    clone = B.workspace(repo) / "src"
    assert (clone / ".git").is_dir() and git(clone, "config", "fuse-harness.origin") == str(repo)


def test_a_good_end_that_fails_stops_before_bisecting(toy, tmp_path, monkeypatch):
    """A test that fails at --good (a transport the good kernel lacks fails, it does not skip)
    would make every commit bad: the good end is run first and the bisection refused."""
    repo, ids = toy
    seen = []
    monkeypatch.setattr(B.Bisection, "check_test", lambda self: None)
    monkeypatch.setattr(B.Bisection, "evaluate", lambda self, wt, bd, rd, n: (
        seen.append(n), B.Step(git(wt, "rev-parse", "HEAD"), B.BAD, 1.0, ["FAIL"]))[1])
    with pytest.raises(B.BisectError) as err:
        B.Bisection(repo, "v-good", "main", "tests/vm/t.py::test_x", results=tmp_path / "results").run()
    assert err.value.message.startswith("the test does not pass at --good v-good (") and "FAIL" in err.value.message
    assert seen == [0]  # only the good end ran
    run_dir = next((tmp_path / "results").iterdir())
    saved = json.loads((run_dir / "bisect.json").read_text())
    assert saved["good_end"]["commit"] == ids[0] and saved["first_bad"] is None
