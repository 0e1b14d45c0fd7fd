"""harness.mutate.order and the ledger's part of it: which tests a mutant's session runs first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import REPO
from harness.mutate import ledger as lg
from harness.mutate.operators import Mutant
from harness.mutate.order import PLAN_ENV, QUICK, Collected, explain, load_plan, order

EDGE = "tests/vm/test_edge_commands.py::test_commit_errors_keep_request_pending[bufpool]"
EDGE2 = "tests/vm/test_edge_teardown.py::test_abort_via_fusectl[bufpool]"
SHELL = "tests/vm/test_transports.py::test_shell_clients[bufpool]"
CHECKS = "tests/vm/test_transports.py::test_guest_checks[bufpool]"
CHECKS_LEGACY = "tests/vm/test_transports.py::test_guest_checks[legacy]"
PARITY = "tests/vm/test_transport_parity.py::test_transport_parity[bufpool]"
PROBE = "tests/vm/test_edge_bufring.py::test_null_payload_area_crash_probe"


def names(tests: list[Collected], plan: dict) -> list[str]:
    return [tests[i].nodeid for i in order(tests, plan)]


# the collection order of the VM suite (files by name): guest checks before the shell smoke tests
SUITE = [Collected(EDGE), Collected(EDGE2), Collected(PARITY, 25.0), Collected(CHECKS_LEGACY, 35.0),
         Collected(CHECKS, 35.0), Collected(SHELL), Collected(PROBE, crash_probe=True)]


def test_without_history_quick_tests_run_first() -> None:
    """No mutant caught yet, nothing measured: unmarked tests (assumed QUICK) in collection order,
    then the `long` ones by their estimate; the crash probe last."""
    assert names(SUITE, {}) == [EDGE, EDGE2, SHELL, PARITY, CHECKS_LEGACY, CHECKS, PROBE]


def test_measured_seconds_beat_the_marker() -> None:
    """The baseline measured the suite: the shell smoke test (8 s) before an edge test of 40 s,
    the guest checks (80 s) before the parity oracle (150 s)."""
    seconds = {EDGE: 40.0, EDGE2: 3.0, SHELL: 8.0, CHECKS: 80.0, CHECKS_LEGACY: 60.0, PARITY: 150.0, PROBE: 1.0}
    assert names(SUITE, {"seconds": seconds}) == [EDGE2, SHELL, EDGE, CHECKS_LEGACY, CHECKS, PARITY, PROBE]


def test_catchers_of_the_function_then_of_the_file_then_the_rest() -> None:
    """A test that caught mutants of this function runs first even when slow; within a tier, the
    fewest seconds per catch first (the guest checks: 80 s / 4 catches = 20 s < the edge test's
    30 s / 1); a crash probe that caught one is not held back."""
    seconds = {EDGE: 30.0, EDGE2: 3.0, SHELL: 8.0, CHECKS: 80.0, PARITY: 150.0}
    plan = {"seconds": seconds, "catchers": {EDGE: [0, 1], CHECKS: [0, 4], PROBE: [1, 1], PARITY: [1, 1]}}
    assert names(SUITE, plan) == [CHECKS, EDGE, PROBE, PARITY, EDGE2, SHELL, CHECKS_LEGACY]


def test_catchers_from_the_ledgers() -> None:
    m = Mutant("fs/fuse/dev_uring.c", 10, "relop", 0, 1, "<", "<=", "fuse_uring_commit")
    hist = [{"outcome": "caught", "caught_by": "t::elsewhere", "file": "fs/fuse/dev.c", "function": "x"},
            {"outcome": "caught", "caught_by": "t::file", "file": m.file, "function": "other"},
            {"outcome": "caught", "caught_by": "t::func", "file": m.file, "function": m.function},
            {"outcome": "caught", "caught_by": "t::func", "file": m.file, "function": m.function},
            {"outcome": "caught", "caught_by": "t::both", "file": m.file, "function": "other"},
            {"outcome": "caught", "caught_by": "t::both", "file": m.file, "function": m.function},
            {"outcome": "timeout", "caught_by": None, "file": m.file, "function": m.function},
            {"outcome": "survived", "caught_by": None, "file": m.file, "function": m.function}]
    assert lg.catchers(hist, m) == {"t::both": [0, 1], "t::file": [1, 1], "t::func": [0, 2]}
    no_function = Mutant("fs/fuse/dev_uring.c", 10, "relop", 0, 1, "<", "<=", None)
    assert lg.catchers(hist, no_function) == {"t::both": [1, 2], "t::file": [1, 1], "t::func": [1, 2]}


def test_clean_seconds_are_of_clean_verdicts_only() -> None:
    summary = {"cases": [{"nodeid": "t::a", "verdict": "PASS", "seconds": 3.5},
                         {"nodeid": "t::b", "verdict": "FAIL", "seconds": 200.0},
                         {"nodeid": "t::c", "verdict": "XFAIL", "seconds": 12.0},
                         {"nodeid": "t::d", "verdict": "SKIP", "seconds": 0.0},
                         {"nodeid": "t::e", "verdict": "TIMEOUT", "seconds": 600.0}]}
    assert lg.clean_seconds(summary) == {"t::a": 3.5, "t::c": 12.0, "t::d": 0.0}
    assert lg.clean_seconds(None) == {}


def test_explain_says_why(tmp_path: Path) -> None:
    plan = {"seconds": {SHELL: 8.0}, "catchers": {CHECKS: [0, 2]}}
    text = explain(SUITE, order(SUITE, plan), plan).splitlines()
    assert text[0].split() == ["1", "caught", "this", "function", "x2", "35.0s", "long", "marker", CHECKS]
    assert "8.0s measured" in text[1] and text[1].endswith(SHELL)
    assert text[2].split()[-3:] == ["assumed", "quick", EDGE] and f"{QUICK:.1f}s" in text[2]
    assert text[-1].endswith("(crash probe)")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert load_plan(str(bad)) is None and load_plan(None) is None and load_plan(str(tmp_path / "none")) is None


INNER = '''
import pytest

def test_checks_legacy():
    pass

@pytest.mark.long(35)
@pytest.mark.parametrize("transport", ["legacy", "bufpool"])
def test_guest_checks(transport):
    pass

def test_edge():
    pass

def test_probe():
    pass
test_probe.crash_probe = True

def test_shell():
    pass

def test_selftest():
    pass
test_selftest.harness_selftest = True
'''

# another plugin that reorders too (as tests/conftest.py and harness.plugin.xdist do): the plan wins
HOSTILE = '''
def pytest_collection_modifyitems(config, items):
    items.reverse()
'''


def test_the_plugin_orders_a_real_session(pytester: pytest.Pytester, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner=INNER)
    pytester.makeconftest(HOSTILE)
    plan = tmp_path / "order.json"
    plan.write_text(json.dumps({"catchers": {"test_inner.py::test_guest_checks[bufpool]": [0, 1]},
                                "seconds": {"test_inner.py::test_shell": 2.0, "test_inner.py::test_edge": 5.0}}))
    base = ("-p", "no:cacheprovider", "-p", "harness.mutate.order", "--results-dir", str(tmp_path / "r"), "-v")
    monkeypatch.setenv(PLAN_ENV, str(plan))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this checkout's harness, whatever the venv has installed
    ran = [ln.split("::")[1].split()[0] for ln in pytester.runpytest_subprocess(*base).stdout.lines
           if ln.startswith("test_inner.py::")]
    assert ran == ["test_guest_checks[bufpool]", "test_shell", "test_edge", "test_checks_legacy",
                   "test_guest_checks[legacy]", "test_probe"]  # the harness self-test deselected
    why = (tmp_path / "order.json.order.txt").read_text().splitlines()
    assert [ln.split()[-1] for ln in why[:3]] == ["test_inner.py::test_guest_checks[bufpool]",
                                                 "test_inner.py::test_shell", "test_inner.py::test_edge"]
    monkeypatch.delenv(PLAN_ENV)  # without a plan the plugin leaves the order alone (here: reversed)
    ran = [ln.split("::")[1].split()[0] for ln in pytester.runpytest_subprocess(*base).stdout.lines
           if ln.startswith("test_inner.py::")]
    assert ran[0] == "test_selftest" and ran[-1] == "test_checks_legacy"  # and the self-test runs
