from harness.results import ktap
from harness.results.model import CaseResult, Verdict, verdict_of

GUEST = """KTAP version 1
1..4
# a diagnostic line
ok 1 bufpool.write_read_4k
not ok 2 bufpool.rename
ok 3 bufpool.fio # SKIP fio not installed
[  12.3] some console noise
not ok 4 bufpool.hang # TIMEOUT after 30s
# Totals: pass:1 fail:1 skip:1 timeout:1
"""


def test_parse_guest_ktap():
    cases = ktap.parse(GUEST)
    assert [c.name for c in cases] == ["bufpool.write_read_4k", "bufpool.rename", "bufpool.fio", "bufpool.hang"]
    assert [c.verdict for c in cases] == [Verdict.PASS, Verdict.FAIL, Verdict.SKIP, Verdict.TIMEOUT]
    assert cases[2].reason == "fio not installed"
    assert ktap.plan_of(GUEST) == 4


def test_render_nested_and_totals():
    cases = [
        CaseResult("tests/vm/test_a.py::test_x", Verdict.PASS,
                   subtests=[{"name": "s1", "verdict": "PASS"}, {"name": "s2", "verdict": "SKIP", "reason": "r"}]),
        CaseResult("tests/vm/test_a.py::test_y", Verdict.FAIL, reason="boom # with hash"),
    ]
    text = ktap.render("fuse-harness", cases)
    lines = text.splitlines()
    assert lines[0] == "KTAP version 1"
    assert "    ok 2 s2 # SKIP r" in lines
    assert "  not ok 2 tests/vm/test_a.py::test_y" in lines
    assert lines[-2] == "not ok 1 fuse-harness"
    assert lines[-1] == "# Totals: fail:1 pass:1"
    reparsed = ktap.parse(text)
    assert [c.name for c in reparsed] == ["fuse-harness"] and not reparsed[0].ok


def test_verdict_mapping():
    assert verdict_of("passed", "call", False) is Verdict.PASS
    assert verdict_of("passed", "call", True) is Verdict.XPASS
    assert verdict_of("skipped", "setup", True) is Verdict.XFAIL
    assert verdict_of("failed", "setup", False) is Verdict.ERROR
    assert verdict_of("failed", "call", False, timed_out=True) is Verdict.TIMEOUT
