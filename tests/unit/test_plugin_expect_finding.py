"""expect_kernel_finding (harness.plugin.health): the finding it names must be in the test's own
kernel-log slice, any other still fails; and the quick attribution test in
tests/vm/test_foundation.py writes a line that is such a finding. Nested pytest runs with
findings planted on the item, as in test_plugin.py (no VM)."""

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch):
    """The nested pytest runs import harness from this checkout (see test_plugin.py)."""
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))


REQUIRE = '''
import pytest
from harness.plugin import state
from harness.dmesg import Finding

WARN = Finding("WARNING", "WARNING: fs/fuse/dev_uring.c:653 at fuse_uring_cmd+0x1/0x2",
               "WARNING:fuse_uring_cmd", "...")
KASAN = Finding("KASAN", "BUG: KASAN: slab-use-after-free in fuse_uring_commit+0x1/0x2",
                "KASAN:fuse_uring_commit", "...")


def plant(request, *findings):
    request.node.stash[state.FINDINGS] = list(findings)


def test_unmarked_finding_fails(request, run_dir):
    plant(request, WARN)


@pytest.mark.expect_kernel_finding("WARNING", r"dev_uring\\.c:653")
def test_required_present_passes(request, run_dir):
    plant(request, WARN)


@pytest.mark.expect_kernel_finding("KASAN", r"^KASAN:fuse_uring_commit$")
def test_required_by_fingerprint_passes(request, run_dir):
    plant(request, KASAN)


@pytest.mark.expect_kernel_finding("WARNING", r"dev_uring\\.c:653")
def test_required_absent_fails(request, run_dir):
    plant(request)


@pytest.mark.expect_kernel_finding("WARNING", r"dev_uring\\.c:653")
def test_required_with_another_finding_fails(request, run_dir):
    plant(request, WARN, KASAN)


@pytest.mark.expect_kernel_finding("BUG", r"dev_uring")
def test_required_of_another_kind_fails(request, run_dir):
    plant(request, WARN)


@pytest.mark.xfail(strict=True, reason="known issue")
@pytest.mark.expect_kernel_finding("WARNING", r"dev_uring\\.c:653")
def test_required_beside_a_known_issue_is_xfail(request, run_dir):
    request.node.stash[state.KNOWN_DMESG] = ("KASAN:fuse_uring_commit",)
    plant(request, WARN, KASAN)
'''


def test_expect_kernel_finding_requires_its_finding_and_no_other(pytester, tmp_path):
    """expect_kernel_finding(kind, pattern): the finding it names is no failure, its absence is
    one (named), and any other finding still fails the test (a known issue may explain it)."""
    pytester.makepyfile(test_inner=REQUIRE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-v")
    result.assert_outcomes(passed=2, failed=4, xfailed=1)
    (run,) = tmp_path.iterdir()
    cases = {c["nodeid"].split("::")[-1]: c for c in json.loads((run / "summary.json").read_text())["cases"]}
    verdicts = {name: c["verdict"] for name, c in cases.items()}
    assert verdicts == {"test_unmarked_finding_fails": "FAIL", "test_required_present_passes": "PASS",
                        "test_required_by_fingerprint_passes": "PASS", "test_required_absent_fails": "FAIL",
                        "test_required_with_another_finding_fails": "FAIL",
                        "test_required_of_another_kind_fails": "FAIL",
                        "test_required_beside_a_known_issue_is_xfail": "XFAIL"}
    absent = cases["test_required_absent_fails"]["reason"]
    assert r"expected kernel finding WARNING /dev_uring\.c:653/ not in this test's kernel-log slice" in absent
    other = cases["test_required_with_another_finding_fails"]["reason"]
    assert "kernel log findings during this test" in other and "KASAN" in other and "WARNING" not in other
    assert "expected kernel finding" not in other
    kind = cases["test_required_of_another_kind_fails"]["reason"]
    assert "WARNING: fs/fuse/dev_uring.c:653" in kind and "expected kernel finding BUG /dev_uring/" in kind


@pytest.mark.parametrize(("args", "said"), [('"WARN", "x"', "unknown kind 'WARN'"),
                                            ('"WARNING", "fake.c:("', "is not a regex"),
                                            ('"fake.c:42"', "takes two strings")])
def test_a_bad_expect_kernel_finding_stops_before_any_test(pytester, tmp_path, args, said):
    pytester.makepyfile(test_bad=f"import pytest\n\n\n@pytest.mark.expect_kernel_finding({args})\n"
                                 "def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert said in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_a_bad_expect_kernel_finding_under_xdist_is_said_not_an_internal_error(pytester, tmp_path):
    """With guests side by side (-n, as `make test` runs) the workers collect: the bad mark's
    error reaches the controller (the test fails with it, the session stops), no INTERNALERROR."""
    pytester.makepyfile(test_bad='import pytest\n\n\n@pytest.mark.expect_kernel_finding("WARN", "x")\n'
                                 "def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-dir", str(tmp_path), "-n", "1")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.INTERNAL_ERROR), out
    assert "unknown kind 'WARN'" in out and "INTERNALERROR" not in out and "Traceback" not in out


def _foundation_test():
    """FAKE_WARNING and the expect_kernel_finding mark of tests/vm/test_foundation.py's quick
    attribution test, read from its source (a VM test module is not imported here)."""
    import ast

    tree = ast.parse((Path(__file__).parents[1] / "vm" / "test_foundation.py").read_text())
    line = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", "") == "FAKE_WARNING" for t in n.targets))
    test = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                and n.name == "test_kernel_finding_is_attributed_to_its_test")
    (mark,) = [d for d in test.decorator_list if isinstance(d, ast.Call)
               and getattr(d.func, "attr", "") == "expect_kernel_finding"]
    return line, tuple(a.value for a in mark.args)


def test_the_quick_attribution_tests_warning_is_a_finding_that_costs_no_reboot():
    """The line tests/vm/test_foundation.py writes to /dev/kmsg, as `dmesg` prints it, is one
    WARNING finding its mark requires (without the mark it fails the test), not an oops kind
    (no fresh guest follows), and a slice begun after it (as the plugin cuts it) is clean."""
    from harness import dmesg
    from harness.plugin import health
    from harness.vm.machine import EndMark

    line, required = _foundation_test()
    log = (f"[   41.100000] fuse-harness-mark 0123456789ab BEGIN tests/vm/test_foundation.py::t\n"
           f"[   41.200000] {line}\n"
           f"[   41.300000] fuse-harness-mark 89abcdef0123 BEGIN probe slice after the fake warning\n"
           f"[   41.400000] fuse-harness-mark 456789abcdef END probe slice after the fake warning\n")
    findings = health.findings_in(dmesg.slice_between(log, "0123456789ab", "89abcdef0123"))
    assert [(f.kind, f.fingerprint) for f in findings] == [("WARNING", "WARNING:fake_splat")]
    assert health.missing(findings, [required]) == [] and health.unexplained(findings, [], [required]) == ""
    assert health.unexplained(findings, []) != "", "without the mark the WARNING would not fail the test"
    assert required[0] in health.KINDS and required[0] not in health.TAINTING
    probe = EndMark("fuse-harness-mark 456789abcdef END probe slice after the fake warning", log, [])
    assert health.cut(probe, "fuse-harness-mark 89abcdef0123 BEGIN probe slice after the fake warning") == ""
    # no BEGIN marker (the guest did not take it): the whole log, the WARNING with it
    assert [f.fingerprint for f in health.findings_in(health.cut(probe, None))] == ["WARNING:fake_splat"]
