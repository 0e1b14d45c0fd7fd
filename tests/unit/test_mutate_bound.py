"""The per-mutant bound: the clean baseline (harness.mutate.baseline), the bound derived from
it, a session cut at the bound (a real process group, no guest) and how a timeout is scored."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import InfraError
from harness.mutate import baseline as bl
from harness.mutate import ledger as lg
from harness.mutate.drive import KernelEvaluator
from harness.mutate.operators import Mutant
from harness.mutate.order import PLAN_ENV

SUITE_SECONDS = 330.0  # a clean suite here: about five and a half minutes under TCG


def test_bound_exceeds_the_clean_suite() -> None:
    assert bl.bound_of(SUITE_SECONDS) == 495.0  # 1.5 x
    assert bl.bound_of(60.0) == 180.0  # a short -k suite: at least 120 s more than it took
    for t in (1.0, 30.0, 240.0, 330.0, 900.0, 3000.0):
        assert bl.bound_of(t) >= t * bl.BOUND_FACTOR and bl.bound_of(t) >= t + bl.BOUND_MARGIN


def test_a_timeout_counts_as_caught_only_after_a_clean_pass_well_within_the_bound() -> None:
    assert bl.timeouts_count(SUITE_SECONDS, 495.0)
    assert bl.timeouts_count(SUITE_SECONDS, 900.0)  # an explicit, longer bound
    assert not bl.timeouts_count(SUITE_SECONDS, 400.0)  # under 1.5 x: a slow clean run could be cut
    assert not bl.timeouts_count(None, 900.0)  # --no-baseline: nothing shows the suite passes in time
    assert "(caught + timeout)" in bl.score_rule(SUITE_SECONDS, 495.0) and "330 s" in bl.score_rule(SUITE_SECONDS, 495)
    assert "--no-baseline" in bl.score_rule(None, 900.0) and "not counted" in bl.score_rule(None, 900.0)
    recs = [{"outcome": o} for o in ("caught", "timeout", "survived", "survived", "discarded")]
    assert lg.counts(recs)["score"] == 0.25 and lg.counts(recs, True)["score"] == 0.5


def case(nodeid: str, verdict: str, seconds: float = 1.0, reason: str = "") -> dict:
    return {"nodeid": nodeid, "verdict": verdict, "seconds": seconds, "reason": reason}


def test_judge_the_clean_session(tmp_path: Path) -> None:
    ok = {"cases": [case("t::a", "PASS", 20.0), case("t::b", "XFAIL", 4.0), case("t::c", "SKIP", 0.0)]}
    b = bl.judge(ok, 0, False, 331.04, tmp_path)
    assert (b.seconds, b.tests, b.run) == (331.0, {"t::a": 20.0, "t::b": 4.0, "t::c": 0.0}, str(tmp_path))
    failing = {"cases": [case("t::a", "PASS"), case("t::b", "FAIL", reason="assert 5 == 0\nmore"),
                         case("t::c", "ERROR")]}
    with pytest.raises(InfraError, match=r"fails on the unmutated tree: t::b FAIL \(and 1 more\): assert 5 == 0\n"):
        bl.judge(failing, 1, False, 100.0, tmp_path)
    with pytest.raises(InfraError, match="did not finish on the unmutated tree within 3600 s"):
        bl.judge({"cases": [case("t::a", "PASS")]}, None, True, 3600.0, tmp_path)
    for summary, rc in ((None, 3), ({"cases": []}, 5), ({"cases": [case("t::s", "SKIP")]}, 0)):
        with pytest.raises(InfraError, match="did not run on the unmutated tree"):
            bl.judge(summary, rc, False, 10.0, tmp_path)


def test_the_store_keeps_a_baseline_per_key(tmp_path: Path) -> None:
    key = {"head": "abc", "k": None, "suite": "f1"}
    assert bl.Store(tmp_path, key).load() is None
    bl.Store(tmp_path, key).save(bl.Baseline(330.0, {"t::a": 20.0}, "/r/baseline", "2026-12-08T10:00:00+0000"))
    got = bl.Store(tmp_path, key).load()
    assert got is not None and (got.seconds, got.tests, got.cached) == (330.0, {"t::a": 20.0}, True)
    assert bl.Store(tmp_path, {**key, "suite": "f2"}).load() is None  # the suite changed: measure again
    bl.Store(tmp_path, key).path.write_text("{")
    assert bl.Store(tmp_path, key).load() is None


def test_the_fingerprint_follows_the_suite(tmp_path: Path) -> None:
    (tmp_path / "tests" / "vm").mkdir(parents=True)
    (tmp_path / "guest").mkdir()
    (tmp_path / "tests" / "vm" / "test_x.py").write_text("def test_x(): pass\n")
    (tmp_path / "known-issues.yaml").write_text("[]\n")
    first = bl.fingerprint(tmp_path)
    (tmp_path / "tests" / "unit").mkdir()
    (tmp_path / "tests" / "unit" / "test_u.py").write_text("x = 1\n")  # not the VM suite
    assert bl.fingerprint(tmp_path) == first
    (tmp_path / "guest" / "c.py").write_text("TIMEOUT = 5\n")
    assert bl.fingerprint(tmp_path) != first


class ScriptedSession(KernelEvaluator):
    """The kernel evaluator with its build skipped and its pytest session replaced by a Python
    script (given the plan through the same environment variable): the bound, the process
    group and the plan file are the real ones."""

    script: str = ""

    def build(self) -> float:
        return 0.0

    def argv(self, folder: Path) -> list[str]:
        return [sys.executable, "-c", self.script, str(folder)]


WRITES_SUMMARY = f'''
import json, os, sys, pathlib
plan = json.loads(pathlib.Path(os.environ["{PLAN_ENV}"]).read_text())
run = pathlib.Path(sys.argv[1]) / "001-mutant"
run.mkdir()
cases = [{{"nodeid": n, "verdict": "PASS", "seconds": 2.0}} for n in sorted(plan["catchers"])]
cases += [{{"nodeid": "t::new", "verdict": "PASS", "seconds": 7.0}},
          {{"nodeid": "t::a", "verdict": "PASS", "seconds": 99.0}},
          {{"nodeid": "t::b", "verdict": "FAIL", "seconds": 50.0, "reason": "boom"}}]
(run / "summary.json").write_text(json.dumps({{"cases": cases}}))
sys.exit(1)
'''


def evaluator(tmp_path: Path, script: str, history: list[dict] | None = None) -> ScriptedSession:
    ledger = lg.Ledger(tmp_path / "ledgers", {"k": 1})
    for r in history or []:
        ledger.add(r)
    ev = ScriptedSession(tmp_path / "target.yaml", "default", tmp_path / "build", tmp_path / "mutants", ledger)
    ev.script = script
    return ev


M = Mutant("fs/fuse/dev_uring.c", 10, "relop", 0, 1, "<", "<=", "fuse_uring_commit")


def test_a_session_past_the_bound_is_stopped_and_is_a_timeout(tmp_path: Path) -> None:
    ev = evaluator(tmp_path, "import time; time.sleep(60)")
    ev.timeout, ev.timeout_note = 1.0, "no verdict within 1 s: the clean suite took 0 s (counted as caught)"
    t0 = time.monotonic()
    rec = ev(M, tmp_path)
    assert time.monotonic() - t0 < 20  # SIGTERM to the group at the bound, not the 60 s sleep
    assert (rec["outcome"], rec["caught_by"], rec["note"]) == (lg.TIMEOUT, None, ev.timeout_note)
    assert "stopped after 1s" in (tmp_path / "mutants" / M.id / "pytest.log").read_text()


def test_a_session_gets_its_plan_and_teaches_the_next(tmp_path: Path) -> None:
    earlier = {"id": "x1", "outcome": "caught", "caught_by": "t::catcher", "file": M.file, "function": M.function}
    ev = evaluator(tmp_path, WRITES_SUMMARY, [earlier])
    ev.seconds = {"t::a": 20.0}  # the baseline's
    rec = ev(M, tmp_path)
    assert (rec["outcome"], rec["caught_by"]) == (lg.CAUGHT, "t::b")
    plan = json.loads((tmp_path / "mutants" / M.id / "order.json").read_text())
    assert plan == {"catchers": {"t::catcher": [0, 1]}, "seconds": {"t::a": 20.0}}
    # clean times the baseline lacked are learnt; the baseline's own stay; a failure's are not times
    assert ev.seconds == {"t::a": 20.0, "t::catcher": 2.0, "t::new": 7.0}


def test_the_campaign_runs_the_baseline_once_and_derives_the_bound(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.mutate import cli

    runs: list[Path] = []

    class Measured(ScriptedSession):
        def baseline(self, folder: Path) -> bl.Baseline:
            runs.append(folder)
            return bl.Baseline(SUITE_SECONDS, {"t::a": 20.0}, str(folder), "now")

    (tmp_path / "target.yaml").write_text("name: v7.3\nsource: path:/tree\nkconfig: []\n")
    ev = Measured(tmp_path / "target.yaml", "default", tmp_path / "build", tmp_path / "mutants",
                  lg.Ledger(tmp_path / "ledgers", {}))
    ws = SimpleNamespace(root=tmp_path / "ws", head="abc")
    args = argparse.Namespace(no_baseline=False, profile="default", k=None, accel=None)
    opts = {"timeout": None, "jobs": 0}
    head = cli._bound(args, opts, ev, ws, tmp_path / "run1")
    assert runs == [tmp_path / "run1" / "baseline"]
    assert (ev.timeout, head["bound"], head["timeouts_count"], ev.seconds) == (495.0, 495.0, True, {"t::a": 20.0})
    assert "counted as caught" in ev.timeout_note and head["baseline"]["seconds"] == SUITE_SECONDS
    again = cli._bound(args, opts, ev, ws, tmp_path / "run2")  # same tree and suite: the cached one
    assert runs == [tmp_path / "run1" / "baseline"] and again["baseline"]["cached"]
    assert cli._bound(args, {**opts, "timeout": 300.0}, ev, ws, tmp_path / "run3")["timeouts_count"] is False
    (tmp_path / "target.yaml").write_text("name: v7.3\nsource: path:/tree\nkconfig: [KASAN]\n")
    cli._bound(args, opts, ev, ws, tmp_path / "run5")  # another kernel config: measured again
    assert runs[-1] == tmp_path / "run5" / "baseline" and len(runs) == 2
    args.no_baseline = True
    plain = cli._bound(args, opts, ev, ws, tmp_path / "run4")
    assert (plain["bound"], plain["timeouts_count"], plain["baseline"]) == (bl.DEFAULT_BOUND, False, None)
    assert "not counted as caught (no clean baseline)" in ev.timeout_note
