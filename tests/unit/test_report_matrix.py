"""The scenario x transport matrix of report.html and `report --text`, from a run folder whose
cases carry their edge scenario and transport (harness.plugin.results records both)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report import render_html, render_text
from harness.report.data import load
from harness.report.matrix import OWN, build, columns

T2 = "tests/vm/test_edge_teardown.py::test_abort_via_fusectl"
T7 = "tests/vm/test_edge_teardown.py::test_request_timeout_aborts_a_stuck_server"
SKIPPED = "target v7.3 (and its series) does not promise transport kmbuf"


def _case(nodeid: str, verdict: str, scenario: str, transport: str | None, reason: str = "",
          subtests: list | None = None) -> dict:
    return {"nodeid": nodeid, "verdict": verdict, "seconds": 1.0, "reason": reason, "findings": [],
            "dmesg_file": None, "vm_outcome": None, "subtests": subtests or [], "scenario": scenario,
            "transport": transport}


def _run(tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "001-v7.3-default"
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps({"status": "FAIL", "kernel": {
        "target": "v7.3", "profile": "default", "kernel_release": "7.3.4"}}))
    timeout_subtests = [
        {"name": "request-timeout.iovec_held", "verdict": "PASS", "reason": ""},
        {"name": "request-timeout.zero_copy_held", "verdict": "PASS", "reason": ""},
        {"name": "request-timeout.zero_copy_slot_unreachable", "verdict": "FAIL", "reason": ""},
        {"name": "request-timeout.kmbuf_held", "verdict": "SKIP", "reason": "kernel has no kmbuf transport"},
        {"name": "request-timeout.kmbuf_zero_copy_held", "verdict": "SKIP", "reason": "kernel has no kmbuf-zero-copy"},
        {"name": "request-timeout.no_leaks", "verdict": "PASS", "reason": ""},
    ]
    cases = [
        _case(f"{T2}[iovec]", "PASS", "abort-fusectl", "iovec"),
        _case(f"{T2}[bufpool]", "XFAIL", "abort-fusectl", "bufpool", "known issue t2-known: held"),
        _case(f"{T2}[zero-copy]", "FAIL", "abort-fusectl", "zero-copy", "edge scenario abort-fusectl misbehaved:\n.."),
        _case(f"{T2}[kmbuf]", "SKIP", "abort-fusectl", "kmbuf", SKIPPED),
        _case(T7, "XFAIL", "request-timeout", None, "known issue slot-outlives: ...", timeout_subtests),
        _case("tests/vm/test_edge_commands.py::test_add_queue_errors", "PASS", "add-queue-errors", "bufpool"),
        _case("tests/vm/test_edge_hostile.py::test_buffer_table_tampered_in_flight[zero-copy]", "PASS",
              "buffer-table", "zero-copy"),
        _case("tests/vm/test_foundation.py::test_enable_uring_is_on", "PASS", None, None),
    ]
    (run / "summary.json").write_text(json.dumps({"counts": {}, "exitstatus": 1, "cases": cases}))
    known = tmp_path / "known.yaml"
    known.write_text(f'- id: t2-known\n  test: "{T2}[[]bufpool[]]"\n  kernel: "7.3"\n  reason: held\n'
                     f'- id: slot-outlives\n  test: "{T7}"\n  kernel: "7.3"\n'
                     '  cases: ["*.zero_copy_slot_unreachable"]\n  reason: slot\n')
    return run, known


def test_each_cell_says_what_happened_or_why_not(tmp_path: Path):
    run, known = _run(tmp_path)
    rows = dict(build(load(run, known)))
    assert list(rows) == ["add-queue-errors", "abort-fusectl", "buffer-table", "request-timeout"]
    t2 = {c: (cell.state, cell.detail) for c, cell in rows["abort-fusectl"].items()}
    assert t2["iovec"] == ("passed", "")
    assert t2["bufpool"] == ("known issue", "t2-known")
    assert t2["zero-copy"][0] == "failed" and t2["zero-copy"][1].startswith("FAIL: edge scenario abort-fusectl")
    assert t2["kmbuf"] == ("skipped", SKIPPED)
    assert t2["bufpool-registered"][0] == "slow tier"  # abort-fusectl's focus is zero-copy, not fixed
    assert t2["bufring"][0] == t2["kmbuf-zero-copy"][0] == "not run"
    assert t2[OWN] == ("n/a", "runs over a transport")
    table = rows["buffer-table"]
    assert (table["iovec"].state, table["iovec"].detail) == ("n/a", "needs fixed; iovec has no fixed")
    assert table["zero-copy"].state == "passed" and table["bufpool-registered"].state == "not run"
    own = rows["add-queue-errors"]
    assert own["bufpool"].state == "passed"
    assert {own[c].state for c in columns() if c != "bufpool"} == {"n/a"}
    assert own[OWN].detail == "sets its own rings up"


def test_a_scenario_with_per_transport_cases_gets_a_cell_per_transport(tmp_path: Path):
    run, known = _run(tmp_path)
    rto = dict(build(load(run, known)))["request-timeout"]
    assert rto[OWN].state == "known issue"
    assert rto["iovec"].state == "passed"
    assert (rto["zero-copy"].state, rto["zero-copy"].detail) == (
        "known issue", "slot-outlives: zero_copy_slot_unreachable FAIL")
    assert rto["kmbuf"].state == rto["kmbuf-zero-copy"].state == "skipped"  # kmbuf_ is not kmbuf_zero_copy_
    assert rto["bufpool"].state == "n/a"
    known.write_text(known.read_text().replace("*.zero_copy_slot_unreachable", "*.other_case"))
    rto = dict(build(load(run, known)))["request-timeout"]
    assert rto["zero-copy"].state == "failed"  # a failing case the known issue does not name


def test_html_and_text_show_the_matrix(tmp_path: Path):
    run, known = _run(tmp_path)
    html = render_html(run, known).read_text()
    assert '<h2 id="matrix">Scenarios x transports</h2>' in html
    assert f'title="{SKIPPED}; {T2}[kmbuf]">skipped</td>' in html
    text = render_text(run, known).splitlines()
    head = next(i for i, ln in enumerate(text) if ln.startswith("scenario "))
    assert text[head].split() == ["scenario", "own", "iov", "bp", "bpr", "zc", "br", "km", "kmzc"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in text[head + 1:head + 5]}
    assert rows["abort-fusectl"] == ["-", "P", "K", "s", "F", ".", "S", "."]
    assert rows["request-timeout"] == ["K", "P", "-", "-", "K", "-", "S", "S"]
    assert all(len(ln) <= 80 for ln in text)


def test_a_run_without_edge_scenarios_has_no_matrix(tmp_path: Path):
    run, known = _run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["cases"] = [c for c in summary["cases"] if not c["scenario"]]
    (run / "summary.json").write_text(json.dumps(summary))
    assert "Scenarios x transports" not in render_text(run, known)
    assert 'id="matrix"' not in render_html(run, known).read_text()
