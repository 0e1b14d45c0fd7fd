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
