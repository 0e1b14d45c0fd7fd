import pytest

from harness import known_issues
from harness.errors import ConfigError


def test_shipped_file_loads():
    known_issues.load()


def test_matching(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("- id: S5\n  test: 'tests/vm/test_edge*::test_pool_at_zero*'\n  kernel: '7.3*'\n"
                 "  reason: uaddr 0 accepted\n  reproducer: python3 -m guest ...\n")
    issues = known_issues.load(p)
    assert known_issues.matching(issues, "tests/vm/test_edge_pool.py::test_pool_at_zero[bufpool]", "7.3")
    assert known_issues.matching(issues, "tests/vm/test_edge_pool.py::test_pool_at_zero", "7.2") is None
    assert known_issues.matching(issues, "tests/vm/test_other.py::test_x", "7.3") is None


def test_unknown_key(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("- id: X\n  test: a\n  kernel: b\n  reason: c\n  severity: high\n")
    with pytest.raises(ConfigError, match="severity"):
        known_issues.load(p)


def test_every_shipped_entry_names_a_collected_test():
    """A renamed or re-parametrized test must not silently orphan its known issue."""
    import fnmatch
    import subprocess
    import sys

    from harness.config import REPO

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/vm", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    ).stdout
    nodeids = [line for line in out.splitlines() if "::" in line]
    assert nodeids, out[-2000:]
    for issue in known_issues.load():
        for pattern in issue.test:
            hits = [n for n in nodeids if fnmatch.fnmatchcase(n, pattern)]
            assert hits, f"known issue {issue.id}: pattern {pattern!r} matches no test in tests/vm"


def test_target_scopes_a_posted_series_finding(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("- id: series-bug\n  test: 'tests/vm/test_x.py::*'\n  kernel: '7.2'\n  target: kmbuf-v4\n"
                 "  reason: r\n- id: base-bug\n  test: 'tests/vm/test_y.py::*'\n  kernel: '7.2'\n  reason: r\n")
    issues = known_issues.load(p)
    assert known_issues.matching(issues, "tests/vm/test_x.py::test_a", "7.2", "kmbuf-v4").id == "series-bug"
    assert known_issues.matching(issues, "tests/vm/test_x.py::test_a", "7.2", "v7.2") is None
    assert known_issues.matching(issues, "tests/vm/test_y.py::test_a", "7.2", "kmbuf-v4").id == "base-bug"


def test_invalid_yaml_is_a_config_error(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("- id: x\n  reference: a: b\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        known_issues.load(p)


def test_cases_limit_what_an_issue_explains(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("- id: one-case\n  test: '*'\n  kernel: '7.2'\n  reason: r\n  cases: ['*.unknown_flag']\n")
    issue = known_issues.load(p)[0]
    subtests = [{"name": "kv.unknown_flag", "verdict": "FAIL"}, {"name": "kv.bad_qid", "verdict": "PASS"},
                {"name": "kv.depth0", "verdict": "FAIL"}, {"name": "kv.skipped", "verdict": "SKIP"}]
    assert issue.cases == ("*.unknown_flag",)
    assert known_issues.unexplained_cases(issue.cases, subtests) == ["kv.depth0: FAIL"]
    assert known_issues.unexplained_cases(issue.cases, subtests[:2]) == []
    assert known_issues.unexplained_cases((), subtests) == []  # no cases: the whole test


def test_intermittent_must_be_a_boolean(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("- id: flaky\n  test: '*'\n  kernel: '7.2'\n  reason: r\n  intermittent: true\n")
    assert known_issues.load(p)[0].intermittent is True
    p.write_text("- id: flaky\n  test: '*'\n  kernel: '7.2'\n  reason: r\n  intermittent: sometimes\n")
    with pytest.raises(ConfigError, match="'intermittent' must be true or false"):
        known_issues.load(p)


def test_two_case_scoped_issues_cover_one_test_together(tmp_path):
    """Two findings of one scenario (two divergences of the parity oracle) are two issues: both
    apply, and their cases together explain the failures; a whole-test issue stands alone."""
    p = tmp_path / "k.yaml"
    p.write_text("- id: a\n  test: '*parity*'\n  kernel: '7.3'\n  reason: r\n  cases: ['*.parity_xattr']\n"
                 "- id: b\n  test: '*parity*'\n  kernel: '7.3'\n  reason: r\n  cases: ['*.parity_reply_length']\n"
                 "- id: whole\n  test: '*whole*'\n  kernel: '7.3'\n  reason: r\n"
                 "- id: c\n  test: '*whole*'\n  kernel: '7.3'\n  reason: r\n  cases: ['*.x']\n")
    issues = known_issues.load(p)
    both = known_issues.covering(issues, "tests/vm/test_transport_parity.py::test_transport_parity[iovec]", "7.3")
    assert [k.id for k in both] == ["a", "b"]
    cases = tuple(c for k in both for c in k.cases)
    subtests = [{"name": "tp.parity_xattr", "verdict": "FAIL"}, {"name": "tp.parity_reply_length", "verdict": "FAIL"}]
    assert known_issues.unexplained_cases(cases, subtests) == []
    assert known_issues.unexplained_cases(both[0].cases, subtests) == ["tp.parity_reply_length: FAIL"]
    assert [k.id for k in known_issues.covering(issues, "t.py::test_whole", "7.3")] == ["whole"]
    assert known_issues.covering(issues, "t.py::test_parity", "7.2") == []


def test_one_defect_may_cover_several_tests(tmp_path):
    """`test` as a list: one finding seen by two scenarios is one issue (one reason in the
    review text), case-scoped across both; a bad `test` value is a config error."""
    p = tmp_path / "k.yaml"
    p.write_text("- id: prep\n  test: ['tests/vm/test_k.py::test_bad_index',\n"
                 "         'tests/vm/test_h.py::test_table[[]kmbuf*]']\n"
                 "  kernel: '7.2'\n  target: kmbuf-v4\n  reason: r\n  cases: ['*.table_unregistered_later_clean']\n")
    issues = known_issues.load(p)
    assert issues[0].test == ("tests/vm/test_k.py::test_bad_index", "tests/vm/test_h.py::test_table[[]kmbuf*]")
    for nodeid in ("tests/vm/test_k.py::test_bad_index", "tests/vm/test_h.py::test_table[kmbuf]",
                   "tests/vm/test_h.py::test_table[kmbuf-zero-copy]"):
        assert [k.id for k in known_issues.covering(issues, nodeid, "7.2", "kmbuf-v4")] == ["prep"], nodeid
    assert known_issues.covering(issues, "tests/vm/test_h.py::test_table[zero-copy]", "7.2", "kmbuf-v4") == []
    subtests = [{"name": "bt.slot_replaced_later_clean", "verdict": "FAIL"},
                {"name": "bt.table_unregistered_later_clean", "verdict": "FAIL"}]
    assert known_issues.unexplained_cases(issues[0].cases, subtests) == ["bt.slot_replaced_later_clean: FAIL"]
    for bad in ("[]", "[1]", "''"):
        p.write_text(f"- id: x\n  test: {bad}\n  kernel: '7.2'\n  reason: r\n")
        with pytest.raises(ConfigError, match="'test' must be a pattern"):
            known_issues.load(p)


def test_kmbuf_v4_replace_case_is_not_a_known_issue():
    """issue 28: the replace case of buffer-table measures the kernel now (the server follows its
    table), so no shipped kmbuf-v4 issue may explain its cases; the unregister case is the
    header-prep finding."""
    import fnmatch

    issues = known_issues.load()
    for ring in ("kmbuf", "kmbuf-zero-copy"):
        nodeid = f"tests/vm/test_edge_hostile.py::test_buffer_table_tampered_in_flight[{ring}]"
        found = known_issues.covering(issues, nodeid, "7.2", "kmbuf-v4")
        assert [k.id for k in found] == ["kmbuf-v4-header-prep-failure-strands-request"]
        patterns = [p for k in found for p in k.cases]
        assert patterns and all(k.cases for k in found)
        for step in ("in_flight_clean", "later_clean", "umount_after_abort"):
            assert not any(fnmatch.fnmatchcase(f"buffer-table.slot_replaced_{step}", p) for p in patterns)
        assert any(fnmatch.fnmatchcase("buffer-table.table_unregistered_later_clean", p) for p in patterns)
