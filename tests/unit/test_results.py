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


def test_junit_carries_verdicts_and_findings():
    import xml.etree.ElementTree as ET

    from harness.results import junit

    cases = [
        CaseResult("tests/vm/test_a.py::test_x", Verdict.PASS, 1.5),
        CaseResult("tests/vm/test_a.py::test_y", Verdict.FAIL, 2.0, reason="kernel log findings",
                   findings=[{"kind": "WARNING", "line": "WARNING: at x.c:1", "fingerprint": "WARNING:f"}],
                   dmesg_file="dmesg/test_y.log"),
        CaseResult("tests/vm/test_a.py::test_z", Verdict.XFAIL, reason="known issue"),
    ]
    root = ET.fromstring(junit.render("fuse-harness", cases, {"kernel_release": "7.3.4"}))
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("skipped") == "1"
    y = root.findall("testcase")[1]
    assert y.get("name") == "test_y" and y.find("failure") is not None
    props = {p.get("name"): p.get("value") for p in y.find("properties")}
    assert props["dmesg_finding"].startswith("WARNING:f") and props["dmesg_file"] == "dmesg/test_y.log"
