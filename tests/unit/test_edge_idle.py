"""request-timeout-idle runs every ring transport in one guest run (like request-timeout), its
cases named per transport: the edge CLI's --transports, the catalog, the scenario x transport
matrix and a known issue scoped to one transport's cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from guest import edge
from guest.transports import features as F
from harness import catalog
from harness.report.data import load
from harness.report.matrix import OWN, build

IDLE = "tests/vm/test_edge_teardown.py::test_request_timeout_with_idle_entries_cancelled"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    edge.add_parser(parser.add_subparsers(dest="cmd"))
    return parser


def test_cases_are_named_per_ring_transport() -> None:
    s = edge.SCENARIOS["request-timeout-idle"]
    assert s.needs is None and edge.IDLE_RINGS == F.RINGS  # every transport with a ring
    assert s.cases[:4] == ("iovec_thread_exit_client_ends_in_time", "iovec_thread_exit_umount",
                           "iovec_ring_closed_client_ends_in_time", "iovec_ring_closed_umount")
    assert len(s.cases) == 4 * len(F.RINGS) == len(set(s.cases))
    assert "kmbuf_zero_copy_ring_closed_umount" in s.cases


def test_transports_option() -> None:
    args = _parser().parse_args(["edge", "request-timeout-idle", "--transports", "iovec, bufring,zero-copy"])
    assert args.transports == ["iovec", "bufring", "zero-copy"]
    assert _parser().parse_args(["edge", "request-timeout-idle"]).transports is None
    for bad in ("legacy", "iovec,nosuch", ","):
        with pytest.raises(SystemExit):
            _parser().parse_args(["edge", "request-timeout-idle", "--transports", bad])


def test_the_guest_refuses_transports_where_they_do_not_fit(capsys) -> None:  # noqa: ANN001
    def args(scenario: str, transport: str | None, transports: list[str] | None) -> argparse.Namespace:
        return argparse.Namespace(scenario=scenario, transport=transport, transports=transports, budget=None,
                                  provoke=False, iterations=1)

    assert edge.main(args("abort-fusectl", "iovec", ["iovec"])) == 4
    assert "edge abort-fusectl takes no --transports (only request-timeout-idle does)" in capsys.readouterr().err
    assert edge.main(args("request-timeout-idle", "iovec", None)) == 4
    assert "sets its own rings up: it takes no --transport" in capsys.readouterr().err
    assert edge.transports_problem("request-timeout-idle", ["iovec", "kmbuf"]) == ""


def test_the_catalog_shows_one_test_over_every_ring_transport() -> None:
    entry = next(e for e in catalog.entries() if e.name == "request-timeout-idle")
    assert [t.nodeid for t in entry.tests] == [IDLE] and entry.tests[0].transports == ()
    row = next(ln for ln in catalog.render().splitlines() if ln.startswith("| [`request-timeout-idle`]"))
    assert f"| {', '.join(F.RINGS)} (in one run: those the target promises) |" in row


def test_matrix_cells_and_a_known_issue_of_one_transport(tmp_path: Path) -> None:
    """One test, a cell per transport from its subtests; a known issue naming kmbuf's cases
    makes kmbuf's cell a known issue and leaves a failure of another transport a failure."""
    run = tmp_path / "001-kmbuf-v4-default"
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps({"status": "FAIL", "kernel": {
        "target": "kmbuf-v4", "profile": "default", "kernel_release": "7.2.13"}}))
    sub = [{"name": f"request-timeout-idle.{c}", "verdict": "PASS", "reason": ""}
           for c in edge.SCENARIOS["request-timeout-idle"].cases if c.startswith("iovec_")]
    sub += [{"name": f"request-timeout-idle.{c}", "verdict": "SKIP", "reason": "not among --transports"}
            for c in edge.SCENARIOS["request-timeout-idle"].cases if c.startswith(("bufpool_", "zero_copy_"))]
    sub += [{"name": "request-timeout-idle.kmbuf_ring_closed_client_ends_in_time", "verdict": "FAIL", "reason": ""},
            {"name": "request-timeout-idle.kmbuf_zero_copy_thread_exit_umount", "verdict": "PASS", "reason": ""}]
    case = {"nodeid": IDLE, "verdict": "XFAIL", "seconds": 40.0, "reason": "known issue idle-kmbuf", "findings": [],
            "dmesg_file": None, "vm_outcome": None, "subtests": sub, "scenario": "request-timeout-idle",
            "transport": None}
    (run / "summary.json").write_text(json.dumps({"counts": {}, "exitstatus": 1, "cases": [case]}))
    known = tmp_path / "known.yaml"
    known.write_text(f'- id: idle-kmbuf\n  test: "{IDLE}"\n  kernel: "7.2"\n  target: "kmbuf-v4"\n'
                     '  cases: ["*.kmbuf_ring_closed_*"]\n  reason: r\n')
    cells = dict(build(load(run, known)))["request-timeout-idle"]
    assert cells[OWN].state == "known issue" and cells["iovec"].state == "passed"
    assert (cells["kmbuf"].state, cells["kmbuf"].detail) == (
        "known issue", "idle-kmbuf: kmbuf_ring_closed_client_ends_in_time FAIL")
    assert cells["kmbuf-zero-copy"].state == "passed"  # kmbuf_ is not kmbuf_zero_copy_
    assert cells["bufpool"].state == cells["bufpool-registered"].state == cells["zero-copy"].state == "skipped"
    assert cells["bufring"].state == "n/a"
    known.write_text(known.read_text().replace("*.kmbuf_ring_closed_*", "*.kmbuf_thread_exit_*"))
    assert dict(build(load(run, known)))["request-timeout-idle"]["kmbuf"].state == "failed"
