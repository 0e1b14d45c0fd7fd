"""harness.mutate.guard and .run.loop: a mutant is always taken out again; a run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.mutate import ledger as lg
from harness.mutate import scope as sc
from harness.mutate.drive import Budget, loop
from harness.mutate.guard import Journal, applied, interruptible
from tests.unit.test_mutate_scope import git

SRC = "int f(int n)\n{\n\tif (n < 1)\n\t\treturn -EINVAL;\n\tspin_unlock(&l);\n\treturn 0;\n}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    t.mkdir()
    git(t, "init", "-q")
    (t / "a.c").write_text(SRC)
    git(t, "add", "-A")
    git(t, "commit", "-qm", "base")
    return t


def some(tree: Path) -> list:
    return sc.select(sc.candidates(tree, sc.Scope("file", "a.c")), 1, None)


def clean(tree: Path, head: str) -> None:
    assert (tree / "a.c").read_text() == SRC
    assert git(tree, "rev-parse", "HEAD") == head
    assert git(tree, "status", "--porcelain", "--untracked-files=no") == ""


def test_applied_commits_the_mutant_and_restores_after_an_exception(tree: Path, tmp_path: Path) -> None:
    head = git(tree, "rev-parse", "HEAD")
    journal = Journal(tmp_path / "journal.json")
    m = some(tree)[0]
    with pytest.raises(RuntimeError), applied(tree, m, journal) as commit:
        assert (tree / "a.c").read_text() == m.apply(SRC)
        assert commit == git(tree, "rev-parse", "HEAD") != head
        assert git(tree, "status", "--porcelain", "--untracked-files=no") == ""  # clean: an exact identity
        assert journal.path.exists()
        raise RuntimeError("build exploded")
    clean(tree, head)
    assert not journal.path.exists()


def test_applied_restores_after_keyboard_interrupt_and_sigterm(tree: Path, tmp_path: Path) -> None:
    head = git(tree, "rev-parse", "HEAD")
    journal = Journal(tmp_path / "journal.json")
    m = some(tree)[0]
    with pytest.raises(KeyboardInterrupt), applied(tree, m, journal):
        raise KeyboardInterrupt
    clean(tree, head)
    with pytest.raises(KeyboardInterrupt), interruptible(), applied(tree, m, journal):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # let it be delivered here
        raise AssertionError("SIGTERM did not interrupt")
    clean(tree, head)
    assert signal.getsignal(signal.SIGTERM) is not None and not journal.path.exists()


def test_a_crash_is_repaired_by_the_next_start(tree: Path, tmp_path: Path) -> None:
    head = git(tree, "rev-parse", "HEAD")
    # a run killed with SIGKILL inside the block: its finally never runs
    code = ("import os, signal, sys; from pathlib import Path\n"
            "from harness.mutate import scope as sc\nfrom harness.mutate.guard import Journal, applied\n"
            "tree, j = Path(sys.argv[1]), Journal(Path(sys.argv[2]))\n"
            "m = sc.select(sc.candidates(tree, sc.Scope('file', 'a.c')), 1, None)[0]\n"
            "with applied(tree, m, j):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tree), str(tmp_path / "journal.json")],
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == -signal.SIGKILL
    assert (tree / "a.c").read_text() != SRC and git(tree, "rev-parse", "HEAD") != head
    journal = Journal(tmp_path / "journal.json")  # the next run
    assert journal.recover() == f"{tree}/a.c"
    clean(tree, head)
    assert not journal.path.exists() and journal.recover() is None


def test_a_broken_journal_is_an_infra_error(tmp_path: Path) -> None:
    from harness.errors import InfraError

    (tmp_path / "journal.json").write_text("{not json")
    with pytest.raises(InfraError, match="unreadable"):
        Journal(tmp_path / "journal.json").recover()


def test_applied_refuses_a_changed_file(tree: Path, tmp_path: Path) -> None:
    m = some(tree)[0]
    (tree / "a.c").write_text(SRC.replace("n < 1", "n <= 1"))
    with pytest.raises(ValueError), applied(tree, m, Journal(tmp_path / "j.json")):
        pass
    assert (tree / "a.c").read_text() == SRC.replace("n < 1", "n <= 1")


def _evaluator(seen: list[str], outcomes: dict[str, str]):  # noqa: ANN202
    def evaluate(m, tree: Path) -> dict:  # noqa: ANN001
        assert (tree / m.file).read_text() != SRC  # the mutant is in
        seen.append(m.id)
        outcome = outcomes.get(m.operator, lg.SURVIVED)
        return {"outcome": outcome, "caught_by": "tests/vm/test_x.py::test_y" if outcome == lg.CAUGHT else None}
    return evaluate


def test_loop_records_restores_and_resumes(tree: Path, tmp_path: Path) -> None:
    head = git(tree, "rev-parse", "HEAD")
    mutants = some(tree)
    key = {"scope": "a.c", "seed": 1}
    ledger = lg.Ledger(tmp_path / "ledgers", key)
    seen: list[str] = []
    saved: list[list[dict]] = []
    evaluate = _evaluator(seen, {"check-drop": lg.CAUGHT})
    records, why = loop(tree, mutants[:3], ledger, Journal(tmp_path / "j.json"), evaluate, Budget(None),
                        lambda r: saved.append(list(r)))
    assert why == "done" and seen == [m.id for m in mutants[:3]] and len(saved) == 3
    assert records[0]["location"] == f"a.c:{mutants[0].line}" and records[0]["diff"].startswith("--- a/a.c")
    clean(tree, head)
    # a rerun with more mutants: the three are skipped, only the new ones run
    seen.clear()
    records, why = loop(tree, mutants, lg.Ledger(tmp_path / "ledgers", key), Journal(tmp_path / "j.json"),
                        evaluate, Budget(None), lambda r: None)
    assert seen == [m.id for m in mutants[3:]]
    assert [r["id"] for r in records] == [m.id for m in mutants]
    assert all(r.get("resumed") for r in records[:3]) and not any(r.get("resumed") for r in records[3:])
    clean(tree, head)


def test_loop_restores_on_interrupt_and_keeps_what_finished(tree: Path, tmp_path: Path) -> None:
    head = git(tree, "rev-parse", "HEAD")
    mutants = some(tree)
    ledger = lg.Ledger(tmp_path / "ledgers", {"k": 1})
    calls = []

    def evaluate(m, t: Path) -> dict:  # noqa: ANN001
        calls.append(m.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"outcome": lg.SURVIVED}

    with pytest.raises(KeyboardInterrupt):
        loop(tree, mutants, ledger, Journal(tmp_path / "j.json"), evaluate, Budget(None), lambda r: None)
    clean(tree, head)
    assert list(lg.Ledger(tmp_path / "ledgers", {"k": 1}).records) == [mutants[0].id]


def test_loop_stops_on_budget_and_on_repeated_errors(tree: Path, tmp_path: Path) -> None:
    mutants = some(tree)
    seen: list[str] = []
    records, why = loop(tree, mutants, lg.Ledger(tmp_path / "a", {}), Journal(tmp_path / "j.json"),
                        _evaluator(seen, {}), Budget(0.0), lambda r: None)
    assert (records, why, seen) == ([], "budget", [])
    records, why = loop(tree, mutants, lg.Ledger(tmp_path / "b", {}), Journal(tmp_path / "j.json"),
                        lambda m, t: {"outcome": lg.ERROR}, Budget(None), lambda r: None)
    assert why == "errors" and len(records) == 2
    assert lg.Ledger(tmp_path / "b", {}).records == {}  # errors are tried again next time


@pytest.mark.parametrize(("summary", "rc", "timed_out", "expected"), [
    ({"cases": [{"nodeid": "t::a", "verdict": "PASS"}, {"nodeid": "t::b", "verdict": "FAIL"}]}, 1, False,
     (lg.CAUGHT, "t::b")),
    ({"cases": [{"nodeid": "t::a", "verdict": "TIMEOUT"}]}, None, True, (lg.CAUGHT, "t::a")),
    ({"cases": [{"nodeid": "t::a", "verdict": "PASS"}]}, None, True, (lg.TIMEOUT, None)),
    ({"cases": [{"nodeid": "t::a", "verdict": "PASS"}, {"nodeid": "t::s", "verdict": "SKIP"}]}, 0, False,
     (lg.SURVIVED, None)),
    ({"cases": []}, 5, False, (lg.ERROR, None)),
    (None, 3, False, (lg.ERROR, None)),
])
def test_outcome_of(summary: dict | None, rc: int | None, timed_out: bool, expected: tuple) -> None:
    assert lg.outcome_of(summary, rc, timed_out)[:2] == expected


def test_counts_and_score() -> None:
    recs = [{"outcome": o} for o in ("caught", "caught", "survived", "discarded", "timeout")]
    c = lg.counts(recs)
    assert (c["caught"], c["discarded"], c["score"]) == (2, 1, 0.5)
    assert lg.counts([{"outcome": "discarded"}])["score"] is None
