"""The plugin's verdict logic, driven through a nested pytest run (no VM: findings are
planted on the test item the way the per-test dmesg hook stores them)."""

import json
import os
from pathlib import Path

import pytest

PLANT = '''
import pytest
from harness.plugin import results as plugin_results
from harness.plugin import state
from harness.dmesg import Finding

WARN = Finding("WARNING", "WARNING: fs/fuse/dev_uring.c:653 at fuse_uring_cmd+0x1/0x2",
               "WARNING:fuse_uring_cmd", "...")
KASAN = Finding("KASAN", "BUG: KASAN: slab-use-after-free in fuse_uring_commit+0x1/0x2",
                "KASAN:fuse_uring_commit", "...")


def plant(request):
    request.node.stash[state.FINDINGS] = [WARN]


def test_finding_fails(request, run_dir):
    plant(request)


@pytest.mark.expect_dmesg("fuse_uring_cmd")
def test_expected_finding_passes(request, run_dir):
    plant(request)


@pytest.mark.xfail(strict=True, reason="known issue")
def test_known_issue_is_xfail(request, run_dir):
    request.node.stash[state.KNOWN_DMESG] = ("WARNING:fuse_uring_cmd",)  # what the issue explains
    plant(request)


@pytest.mark.xfail(strict=True, reason="known issue")
def test_known_issue_with_another_finding_fails(request, run_dir):
    request.node.stash[state.KNOWN_DMESG] = ("WARNING:fuse_uring_cmd",)
    request.node.stash[state.FINDINGS] = [WARN, KASAN]


@pytest.mark.xfail(strict=True, reason="known issue")
def test_known_issue_with_no_declared_findings_fails_on_one(request, run_dir):
    plant(request)


@pytest.mark.xfail(strict=True, reason="known issue naming one guest case")
def test_known_issue_explains_its_case(request, run_dir):
    request.node.stash[state.KNOWN_CASES] = ("*.unknown_flag",)
    plugin_results.record_subtests(request, [{"name": "kv.unknown_flag", "verdict": "FAIL", "reason": ""},
                                     {"name": "kv.bad_qid", "verdict": "PASS", "reason": ""}])
    assert False, "kv.unknown_flag failed"


@pytest.mark.xfail(strict=True, reason="known issue naming one guest case")
def test_known_issue_with_another_failing_case_fails(request, run_dir):
    request.node.stash[state.KNOWN_CASES] = ("*.unknown_flag",)
    plugin_results.record_subtests(request, [{"name": "kv.unknown_flag", "verdict": "FAIL", "reason": ""},
                                     {"name": "kv.bad_qid", "verdict": "FAIL", "reason": ""}])
    assert False, "two cases failed"


@pytest.mark.xfail(strict=False, reason="intermittent known issue")
def test_intermittent_issue_that_did_not_show_passes(request, run_dir):
    request.node.stash[state.INTERMITTENT] = "flaky-bug"


@pytest.mark.xfail(strict=True, reason="known issue, fixed kernel")
def test_fixed_known_issue_is_xpass(request, run_dir):
    pass


def test_clean(run_dir):
    pass


@pytest.fixture
def broken_kernel():
    raise FileNotFoundError("bzImage vanished")


@pytest.mark.xfail(strict=True, reason="known issue")
def test_known_issue_with_broken_setup_is_an_error(broken_kernel):
    pass
'''


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch):
    """The nested pytest runs import harness from this checkout, not from wherever the venv's
    editable install points (another checkout of the project)."""
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))


def test_verdicts_from_findings_and_known_issues(pytester, tmp_path):
    pytester.makepyfile(test_inner=PLANT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-v")
    result.assert_outcomes(passed=3, failed=5, xfailed=2, errors=1)
    out = result.stdout.str()
    assert "test_finding_fails FAILED" in out and "kernel log findings during this test" in out
    assert "test_known_issue_is_xfail XFAIL" in out
    assert "test_fixed_known_issue_is_xpass FAILED" in out  # strict XPASS fails the run
    (run,) = tmp_path.iterdir()
    cases = {c["nodeid"].split("::")[-1]: c for c in json.loads((run / "summary.json").read_text())["cases"]}
    assert cases["test_finding_fails"]["verdict"] == "FAIL"
    assert cases["test_finding_fails"]["findings"][0]["fingerprint"] == "WARNING:fuse_uring_cmd"
    assert cases["test_expected_finding_passes"]["verdict"] == "PASS"
    assert cases["test_known_issue_is_xfail"]["verdict"] == "XFAIL"
    assert cases["test_fixed_known_issue_is_xpass"]["verdict"] == "FAIL"
    assert cases["test_clean"]["verdict"] == "PASS"
    assert cases["test_known_issue_with_another_finding_fails"]["verdict"] == "FAIL"
    assert "does not explain" in out and "KASAN" in out
    assert cases["test_known_issue_with_no_declared_findings_fails_on_one"]["verdict"] == "FAIL"
    assert cases["test_known_issue_with_broken_setup_is_an_error"]["verdict"] == "ERROR"
    assert cases["test_known_issue_explains_its_case"]["verdict"] == "XFAIL"
    assert cases["test_intermittent_issue_that_did_not_show_passes"]["verdict"] == "PASS"
    assert cases["test_known_issue_with_another_failing_case_fails"]["verdict"] == "FAIL"
    assert "kv.bad_qid: FAIL" in cases["test_known_issue_with_another_failing_case_fails"]["reason"]
    for name in ("junit.xml", "results.ktap", "metadata.json", "report.html", "report.txt"):
        assert (run / name).is_file(), name


def test_terminal_summary_names_each_known_issue_once():
    from harness.plugin import results as plugin_results
    from harness.results.model import CaseResult, Verdict

    reason = "known issue zc-tail: zero-copy short read leaves the page tail\nsecond line of detail"
    cases = [CaseResult("t::a[kmbuf]", Verdict.XFAIL, reason=reason),
             CaseResult("t::b[kmbuf]", Verdict.XFAIL, reason=reason),
             CaseResult("t::c", Verdict.PASS),
             CaseResult("t::d", Verdict.SKIP, reason="target v7.3 does not promise kmbuf"),
             CaseResult("t::e", Verdict.SKIP, reason="target v7.3 does not promise kmbuf"),
             CaseResult("t::f", Verdict.FAIL, reason="AssertionError: boom\nmore")]
    lines = plugin_results.summary_lines(cases)
    text = "\n".join(lines)
    assert text.count("zero-copy short read leaves the page tail") == 1
    assert "XFAIL   t::a[kmbuf] (known issue zc-tail)" in lines
    assert "second line" not in text
    assert text.count("does not promise kmbuf") == 1 and "  2 test(s)" in text
    assert "FAIL    t::f AssertionError: boom" in lines
    assert "t::c" not in text
    two = "known issue a-1: first finding\nknown issue b-2: second finding\nbut nothing else"
    lines = plugin_results.summary_lines([CaseResult("t::g", Verdict.XFAIL, reason=two)])
    assert lines == ["XFAIL   t::g (known issue a-1, b-2)", "known issues:", "  a-1: first finding",
                     "  b-2: second finding"]


def test_two_workers_give_one_run_folder_with_the_same_verdicts(pytester, tmp_path):
    """-n 2 (pytest-xdist): the verdicts each worker reaches travel to the controller, which
    alone writes the run's files, into one folder."""
    pytester.makepyfile(test_inner=PLANT)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(single))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(parallel), "-n", "2")
    result.assert_outcomes(passed=3, failed=5, xfailed=2, errors=1)
    (run,) = parallel.iterdir()
    (one,) = single.iterdir()

    def verdicts(folder):
        cases = json.loads((folder / "summary.json").read_text())["cases"]
        return {c["nodeid"].split("::")[-1]: c["verdict"] for c in cases}

    assert verdicts(run) == verdicts(one) and len(verdicts(run)) == 11
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"] == "FAIL" and set(meta["workers"]) <= {"gw0", "gw1"} and meta["workers"]
    for name in ("junit.xml", "results.ktap", "report.html", "report.txt"):
        assert (run / name).is_file(), name


def test_auto_workers_are_the_guests_this_host_runs_side_by_side(monkeypatch):
    """-n auto over VM tests asks the harness (auto_guests: CPUs, memory, accelerator), not
    xdist's CPU count; over unit tests only, or with PYTEST_XDIST_AUTO_NUM_WORKERS, xdist
    decides; with 1 TiB guests no host holds more than one."""
    from types import SimpleNamespace

    from harness import config as hcfg
    from harness.plugin.xdist import pytest_xdist_auto_num_workers
    from harness.vm.boot import auto_guests

    def config(*args: str) -> SimpleNamespace:
        return SimpleNamespace(invocation_params=SimpleNamespace(dir=hcfg.REPO), args=list(args),
                               getoption=lambda name, default=None: default)

    monkeypatch.setenv("FUSE_HARNESS_ACCEL", "tcg")
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    assert pytest_xdist_auto_num_workers(config("tests")) == auto_guests(hcfg.vm_settings(), "tcg")
    assert pytest_xdist_auto_num_workers(config("tests/unit")) is None
    monkeypatch.setenv("FUSE_HARNESS_MEMORY", "1T")
    assert pytest_xdist_auto_num_workers(config("tests/vm")) == 1
    monkeypatch.setenv("FUSE_HARNESS_MEMORY", "2GB")  # the session's own check names it
    assert pytest_xdist_auto_num_workers(config("tests/vm")) == 1
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    assert pytest_xdist_auto_num_workers(config("tests/vm")) is None


def test_two_workers_over_unit_tests_leave_no_run_folder(pytester, tmp_path):
    pytester.makepyfile(test_plain="def test_a():\n    pass\n\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-n", "2")
    result.assert_outcomes(passed=2)
    assert not any(tmp_path.iterdir())


def test_a_bad_known_issues_file_under_xdist_stops_in_the_controller(pytester, tmp_path):
    """The workers load known-issues.yaml as they collect, where its error would reach the
    controller as an INTERNALERROR without the message: the controller checks it first."""
    pytester.makeconftest('''
from harness import known_issues
from harness.errors import ConfigError


def _bad(*args, **kwargs):
    raise ConfigError("known-issues.yaml: entry x: unknown key 'bogus'")


known_issues.load = _bad
''')
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-n", "1")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "unknown key 'bogus'" in out and "INTERNALERROR" not in out
    assert not any(tmp_path.iterdir())


def test_an_unknown_target_under_xdist_stops_in_the_controller(pytester, tmp_path):
    """Over unit tests too: the workers load the target as they collect."""
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-n", "1",
                                           "--target", "nosuch")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "unknown target 'nosuch'" in out and "INTERNALERROR" not in out
    assert not any(tmp_path.iterdir())


def test_a_worker_that_dies_leaves_its_test_in_the_summary(pytester, tmp_path):
    pytester.makepyfile(test_crash='''
import os


def test_a(run_dir):
    pass


def test_b(run_dir):
    os._exit(1)


def test_c(run_dir):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-n", "1")
    result.assert_outcomes(passed=2, failed=1)
    (run,) = tmp_path.iterdir()
    cases = {c["nodeid"].split("::")[-1]: c["verdict"] for c in json.loads((run / "summary.json").read_text())["cases"]}
    assert cases == {"test_a": "PASS", "test_b": "ERROR", "test_c": "PASS"}


def test_a_worker_without_a_guest_stops_cleanly(pytester, tmp_path):
    pytester.makepyfile(test_noguest='''
import pytest
from harness.plugin.xdist import stop_session


@pytest.fixture(scope="session")
def guest(request):
    stop_session(request, "fuse-harness: VM did not come up", 3)


def test_a(run_dir, guest):
    pass


def test_b(run_dir, guest):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-n", "1")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "VM did not come up" in out
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert [c["verdict"] for c in summary["cases"]][:1] == ["ERROR"]


def test_the_vm_line_names_the_guests_their_boots_and_the_tcg_threading():
    from harness.plugin.results import vm_line

    one = {"vm": {"accel": "tcg", "accel_reason": "no vmx", "boot_seconds": 10.4, "tcg_threads": "multi"}}
    assert vm_line(one) == "vm: tcg (no vmx), boot 10.4s, a TCG thread per vCPU"
    three = {"vm": {"accel": "tcg", "accel_reason": "no vmx", "boot_seconds": 24.2, "tcg_threads": "single"},
             "workers": {f"gw{i}": {"vm": {"boot_seconds": b}} for i, b in enumerate((24.2, 31.4, 23.4))}}
    assert vm_line(three) == "vm: tcg (no vmx), 3 guests side by side, boots 23.4-31.4s, one TCG thread per guest"
    kept = {"vm": {"accel": "kvm", "accel_reason": "ran", "adopted": True, "tcg_threads": None}}
    assert vm_line(kept) == "vm: kvm (ran), a kept guest, no boot" and vm_line({}) is None
    # `vm up` kept one guest (a thread per vCPU); under -n 3 one worker took it, two booted
    mixed = {"vm": {"accel": "tcg", "accel_reason": "no vmx", "adopted": True, "tcg_threads": "multi"},
             "workers": {"gw0": {"vm": {"adopted": True, "boot_seconds": None, "tcg_threads": "multi"}},
                         "gw1": {"vm": {"boot_seconds": 22.0, "tcg_threads": "single"}},
                         "gw2": {"vm": {"boot_seconds": 25.5, "tcg_threads": "single"}}}}
    assert vm_line(mixed) == ("vm: tcg (no vmx), 3 guests side by side, boots 22.0-25.5s and a kept guest, "
                              "no boot, TCG threads per guest: multi and single")


def test_long_tests_start_first_only_with_guests_side_by_side(pytester, tmp_path):
    """Under -n, the tests marked `long` come first in every worker's collection, the longest
    first, and the rest keep their order; with one guest nothing moves. The controller hands
    them out one at a time (--maxschedchunk 1), unless the user chose a chunk size."""
    pytester.makepyfile(test_order='''
import pytest

def test_a():
    pass

@pytest.mark.long(20)
def test_b():
    pass

def test_c():
    pass

@pytest.mark.long(90)
@pytest.mark.parametrize("x", [2, 1])
def test_d(x):
    pass
''')
    base = ("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "--collect-only", "-q")
    single = pytester.runpytest_subprocess(*base).stdout.lines
    collected = [ln.split("::")[1] for ln in single if "::" in ln]
    assert collected == ["test_a", "test_b", "test_c", "test_d[2]", "test_d[1]"]
    # a worker's own order: the collection xdist's controller checks (-n 2 --collect-only would
    # show the controller's, which does not collect), seen through the hook with workerinput
    from types import SimpleNamespace

    from harness.config import REPO
    from harness.plugin.xdist import pytest_collection_modifyitems, pytest_configure

    def item(name: str, seconds: int) -> SimpleNamespace:
        mark = SimpleNamespace(args=(seconds,)) if seconds else None
        return SimpleNamespace(name=name, get_closest_marker=lambda m: mark if m == "long" else None)

    for workers, order in ((2, ["d2", "d1", "b", "a", "c"]), (1, ["a", "b", "c", "d2", "d1"])):
        items = [item("a", 0), item("b", 20), item("c", 0), item("d2", 90), item("d1", 90)]
        pytest_collection_modifyitems(SimpleNamespace(workerinput={"workercount": workers}), items)  # type: ignore[arg-type]
        assert [i.name for i in items] == order, workers
    for dist, chunk, paths, expected in (("load", None, ["tests/vm"], 1), ("load", 8, ["tests"], 8),
                                         ("load", None, ["tests/unit"], None), ("no", None, ["tests"], None)):
        cfg = SimpleNamespace(option=SimpleNamespace(dist=dist, maxschedchunk=chunk), args=paths,
                              invocation_params=SimpleNamespace(dir=REPO))
        pytest_configure(cfg)  # type: ignore[arg-type]
        assert cfg.option.maxschedchunk == expected, (dist, chunk, paths)


def test_a_case_records_its_edge_scenario_and_transport(tmp_path):
    """summary.json's scenario comes from the test's source (run_edge's scenario argument),
    read once per folder; the transport from the test's transport marker."""
    from harness.plugin.results import scenario_of

    (tmp_path / "test_edges.py").write_text(
        'import pytest\nfrom edge_helpers import run_edge, transports_for\n\n'
        '@pytest.mark.parametrize("ring", transports_for("abort-fusectl"))\n'
        'def test_t2(vm, request, run_dir, kernel, ring):\n'
        '    run_edge(vm, request, run_dir, kernel, "abort-fusectl", "T2", timeout=1)\n\n'
        'def test_other(vm):\n    vm.run("true")\n')

    class Item:
        def __init__(self, name: str, vm: bool = True) -> None:
            self.path, self.name, self.vm = tmp_path / "test_edges.py", name, vm
            self.originalname = name.split("[")[0]

        def get_closest_marker(self, name: str):
            return object() if name == "vm" and self.vm else None

    assert scenario_of(Item("test_t2[zero-copy]")) == "abort-fusectl"
    assert scenario_of(Item("test_other")) is None
    assert scenario_of(Item("test_t2[iovec]", vm=False)) is None  # a unit test: nothing read
