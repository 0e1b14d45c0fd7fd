"""harness.catalog: docs/edge-cases.md is what the generator makes of the scenarios, and the
parser reads every way tests/vm declares a scenario's transports."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import catalog
from harness.catalog import CatalogError, edge_tests, entries


def test_edge_cases_page_is_in_step_with_the_scenarios():
    expected = catalog.render()
    assert catalog.PAGE.is_file(), "docs/edge-cases.md is missing: run `python -m harness.catalog --write`"
    assert catalog.PAGE.read_text() == expected, (
        "docs/edge-cases.md differs from the scenarios and tests: run `python -m harness.catalog --write`")


def test_every_scenario_is_run_by_a_test_and_every_test_names_a_scenario():
    for e in entries():
        assert e.tests, f"scenario {e.name} has no test in tests/vm"
        assert e.guest_doc, f"{e.source} has no docstring"


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(textwrap.dedent(text))


def test_transports_from_marks_inline_params_helpers_and_comprehensions(tmp_path: Path):
    vm = tmp_path / "tests" / "vm"
    vm.mkdir(parents=True)
    _write(vm, "edge_helpers.py", """
        import pytest
        RINGS = [pytest.param(t, marks=pytest.mark.transport(t), id=t) for t in ("iovec", "bufpool")]
        RINGS_D = [*RINGS, pytest.param("kmbuf", marks=pytest.mark.transport("kmbuf"), id="kmbuf")]
    """)
    _write(vm, "test_a.py", '''
        import pytest
        from edge_helpers import RINGS_D, run_edge
        ZC = pytest.mark.transport("zero-copy")
        ONE = pytest.param("iovec", marks=pytest.mark.transport("iovec"), id="iovec")

        @pytest.mark.parametrize("ring", RINGS_D)
        def test_ringed(vm, request, run_dir, kernel, ring):
            """Does a thing."""
            run_edge(vm, request, run_dir, kernel, "commit-errors", "C1", timeout=1)

        @ZC
        def test_marked(vm, request, run_dir, kernel):
            run_edge(vm, request, run_dir, kernel, "no-sqe128", "G1", timeout=1)

        @pytest.mark.parametrize("ring", [ONE])
        def test_local(vm, request, run_dir, kernel, ring):
            run_edge(vm, request, run_dir, kernel, "hung-writer", "H", timeout=1)

        def test_plain(vm, request, run_dir, kernel):
            run_edge(vm, request, run_dir, kernel, "before-mount", "G2", timeout=1)

        def test_not_an_edge_test(vm):
            vm.run("true")
    ''')
    got = {t.nodeid.split("::")[1]: (t.scenario, t.transports, t.doc) for t in edge_tests(vm)}
    assert got == {
        "test_ringed": ("commit-errors", ("iovec", "bufpool", "kmbuf"), "Does a thing."),
        "test_marked": ("no-sqe128", ("zero-copy",), ""),
        "test_local": ("hung-writer", ("iovec",), ""),
        "test_plain": ("before-mount", (), ""),
    }


def test_an_unreadable_declaration_names_the_test(tmp_path: Path):
    _write(tmp_path, "test_b.py", """
        import pytest
        from somewhere import MYSTERY

        @pytest.mark.parametrize("ring", MYSTERY)
        def test_odd(vm, request, run_dir, kernel, ring):
            run_edge(vm, request, run_dir, kernel, "commit-errors", "C1", timeout=1)
    """)
    with pytest.raises(CatalogError, match=r"test_b.py::test_odd: cannot resolve 'MYSTERY'"):
        edge_tests(tmp_path)


def test_an_unknown_scenario_is_an_error(tmp_path: Path):
    _write(tmp_path, "test_c.py", """
        def test_x(vm, request, run_dir, kernel):
            run_edge(vm, request, run_dir, kernel, "no-such-scenario", "Z9", timeout=1)
    """)
    with pytest.raises(CatalogError, match="unknown scenario 'no-such-scenario'"):
        entries(tmp_path)


def test_transports_from_a_scenarios_needs_with_the_slow_tier(tmp_path: Path):
    from guest import edge

    _write(tmp_path, "test_d.py", '''
        import pytest
        from edge_helpers import run_edge, transports_for

        @pytest.mark.parametrize("ring", transports_for("abort-fusectl"))
        def test_t2(vm, request, run_dir, kernel, ring):
            run_edge(vm, request, run_dir, kernel, "abort-fusectl", "T2", timeout=1)
    ''')
    (t,) = edge_tests(tmp_path)
    assert t.by_needs and t.transports == edge.transports_for("abort-fusectl")
    assert "zero-copy" in t.transports and "zero-copy" not in t.slow  # its focus: zero-copy
    assert t.slow == ("bufpool-registered",)
    (entry,) = [e for e in entries(tmp_path) if e.name == "abort-fusectl"]
    assert entry.tests == [t] and entry.needs == ("ring",)


def test_a_scenario_with_needs_cannot_have_its_transports_picked_by_hand(tmp_path: Path):
    _write(tmp_path, "test_e.py", '''
        import pytest

        @pytest.mark.parametrize("ring", [pytest.param("iovec", marks=pytest.mark.transport("iovec"), id="iovec")])
        def test_t1(vm, request, run_dir, kernel, ring):
            run_edge(vm, request, run_dir, kernel, "umount-inflight", "T1", timeout=1)
    ''')
    with pytest.raises(CatalogError, match=r"test_e.py::test_t1: scenario 'umount-inflight' declares the features"):
        entries(tmp_path)


def test_transports_for_must_name_the_scenario_the_test_runs(tmp_path: Path):
    _write(tmp_path, "test_f.py", '''
        import pytest
        from edge_helpers import run_edge, transports_for

        @pytest.mark.parametrize("ring", transports_for("kill-server"))
        def test_t1(vm, request, run_dir, kernel, ring):
            run_edge(vm, request, run_dir, kernel, "umount-inflight", "T1", timeout=1)
    ''')
    with pytest.raises(CatalogError, match=r"runs 'umount-inflight' over transports_for\('kill-server'\)"):
        edge_tests(tmp_path)
    _write(tmp_path, "test_f.py", '''
        import pytest
        from edge_helpers import run_edge, transports_for

        @pytest.mark.parametrize("ring", transports_for("no-sqe128"))
        def test_g1(vm, request, run_dir, kernel, ring):
            run_edge(vm, request, run_dir, kernel, "no-sqe128", "G1", timeout=1)
    ''')
    with pytest.raises(CatalogError, match="not a scenario with `needs`"):
        edge_tests(tmp_path)
