"""compare: two synthetic run folders -> new passes, regressions, findings, one-sided tests, timings."""

import json

import pytest

from harness import compare as C
from harness.cli import main
from harness.errors import UserError

T = "tests/vm/test_transports.py::test_guest_checks"


def case(nodeid, verdict, seconds=0.5, reason="", findings=()):
    return {"nodeid": nodeid, "verdict": verdict, "seconds": seconds, "reason": reason,
            "findings": [{"kind": "WARNING", "line": f"WARNING: {fp}", "fingerprint": fp} for fp in findings]}


def run_folder(path, target, release, cases):
    path.mkdir(parents=True)
    (path / "metadata.json").write_text(json.dumps({"kernel": {"target": target, "kernel_release": release}}))
    (path / "summary.json").write_text(json.dumps({"counts": {}, "exitstatus": 0, "cases": cases}))
    return path


@pytest.fixture
def runs(tmp_path):
    base = run_folder(tmp_path / "001-v7.2-default", "v7.2", "7.2.9", [
        case(f"{T}[legacy]", "PASS", 30.0),
        case(f"{T}[bufpool]", "SKIP", reason="target v7.2 does not promise transport bufpool"),
        case(f"{T}[zero-copy]", "SKIP"),
        case("tests/vm/test_a.py::test_slow", "PASS", 2.0),
        case("tests/vm/test_a.py::test_fast_anyway", "PASS", 0.2),
        case("tests/vm/test_a.py::test_breaks", "PASS", findings=["old_warn"]),
        case("tests/vm/test_a.py::test_gone", "PASS"),
        case("tests/vm/test_a.py::test_fixed", "FAIL"),
        case("tests/vm/test_a.py::test_newly_failing", "SKIP"),
    ])
    head = run_folder(tmp_path / "002-v7.3-default", "v7.3", "7.3.4", [
        case(f"{T}[legacy]", "PASS", 31.0, findings=["old_warn", "new_warn"]),
        case(f"{T}[bufpool]", "PASS", 40.0),
        case(f"{T}[zero-copy]", "PASS", 41.0),
        case("tests/vm/test_a.py::test_slow", "PASS", 5.0),
        case("tests/vm/test_a.py::test_fast_anyway", "PASS", 0.9),
        case("tests/vm/test_a.py::test_breaks", "TIMEOUT", reason="Timeout"),
        case("tests/vm/test_a.py::test_fixed", "PASS"),
        case("tests/vm/test_a.py::test_newly_failing", "FAIL", reason="boom"),
        case("tests/vm/test_b.py::test_new", "PASS"),
    ])
    return base, head


def test_new_transports_show_as_new_passes(runs):
    r = C.compare(*runs)
    assert [(x["nodeid"], x["base"], x["head"]) for x in r["new_pass"]] == [
        (f"{T}[bufpool]", "SKIP", "PASS"), (f"{T}[zero-copy]", "SKIP", "PASS"),
        ("tests/vm/test_a.py::test_fixed", "FAIL", "PASS")]


def test_regressions_findings_one_sided_and_other_changes(runs):
    r = C.compare(*runs)
    assert r["regressions"] == [{"nodeid": "tests/vm/test_a.py::test_breaks", "base": "PASS", "head": "TIMEOUT",
                                 "reason": "Timeout"}]
    assert [(f["nodeid"], f["fingerprint"]) for f in r["new_findings"]] == [(f"{T}[legacy]", "new_warn")]
    assert r["only_base"] == [{"nodeid": "tests/vm/test_a.py::test_gone", "verdict": "PASS"}]
    assert r["only_head"] == [{"nodeid": "tests/vm/test_b.py::test_new", "verdict": "PASS"}]
    assert [(x["nodeid"], x["base"], x["head"]) for x in r["changed"]] == [
        ("tests/vm/test_a.py::test_newly_failing", "SKIP", "FAIL")]
    assert r["base_kernel"]["kernel_release"] == "7.2.9" and r["head"] == str(runs[1])


def test_timing_only_when_both_above_one_second(runs):
    r = C.compare(*runs)
    assert r["timing"] == [{"nodeid": "tests/vm/test_a.py::test_slow", "base": 2.0, "head": 5.0, "ratio": 2.5,
                            "delta": 3.0}]


def test_time_per_phase_side_by_side(runs):
    base, head = runs
    for run, durations, end in ((base, {"source": 2.0, "build": 1400.0, "boot": 30.0}, "01:40:00"),
                                (head, {"source": 1.0, "build": 20.0, "boot": 15.0, "series": 3.0}, "01:05:00")):
        meta = json.loads((run / "metadata.json").read_text())
        meta.update(durations=durations, started="2026-12-01T01:00:00Z", finished=f"2026-12-01T{end}Z")
        (run / "metadata.json").write_text(json.dumps(meta))
    rows = {r["phase"]: r for r in C.compare(base, head)["phases"]}
    assert rows["build"] == {"phase": "build", "base": 1400.0, "head": 20.0, "ratio": 0.01}
    assert rows["wall"]["base"] == 2400.0 and rows["wall"]["head"] == 300.0 and rows["wall"]["ratio"] == 0.12
    for run, side in ((base, "base"), (head, "head")):
        cases = {c["nodeid"]: c for c in json.loads((run / "summary.json").read_text())["cases"]}
        assert rows["tests"][side] == round(sum(c["seconds"] for c in cases.values()), 1)
    assert rows["series"] == {"phase": "series", "base": None, "head": 3.0, "ratio": None}
    text = C.render(C.compare(base, head))
    assert "time per phase (base -> head):" in text
    assert "build      1400.0s ->     20.0s  (0.01x)" in text
    assert "series           - ->      3.0s" in text


def test_text_table_and_saved_files(runs):
    r = C.compare(*runs)
    text = C.render(r)
    assert "new passes: 3" in text and "   SKIP -> PASS    test_transports.py::test_guest_checks[bufpool]" in text
    assert "regressions (PASS on base, failing on head): 1" in text and "only in base: 1" in text
    path = C.save(r, runs[1])
    assert json.loads(path.read_text())["new_pass"][0]["head"] == "PASS"
    assert (runs[1] / "compare.txt").read_text() == text


def test_report_renders_compare_json(runs):
    from harness.report.data import load
    from harness.report.sections import compare as section

    C.save(C.compare(*runs), runs[1])
    html = section(load(runs[1]))
    assert "Regressions" in html and "test_breaks" in html and "Newly passing (3)" in html


def test_missing_summary_is_a_user_error(tmp_path, runs):
    (tmp_path / "003-x").mkdir()
    (tmp_path / "003-x" / "metadata.json").write_text("{}")
    with pytest.raises(UserError, match="no summary.json"):
        C.compare(runs[0], tmp_path / "003-x")


def test_cli_on_run_folders(runs, capsys):
    assert main(["compare", *map(str, runs)]) == 1  # a regression and a new finding
    out = capsys.readouterr().out
    assert "new passes: 3" in out and (runs[1] / "compare.json").is_file()


def test_cli_argument_errors(runs, capsys):
    assert main(["compare", str(runs[0])]) == 4
    assert "two run folders" in capsys.readouterr().err
    assert main(["compare"]) == 4
    assert main(["compare", *map(str, runs), "--base-target", "v7.2"]) == 4
    assert main(["compare", "--base-target", "v9.9", "--head-target", "v7.3"]) == 4


def test_suite_argv_matches_run():
    assert C.suite_argv("v7.2", "default", "/r", k="bufpool", accel="tcg") == [
        "tests/vm", "-p", "no:cacheprovider", "--results-dir", "/r", "--target", "v7.2", "--profile", "default",
        "--accel", "tcg", "-k", "bufpool"]


def test_posted_series_pairs_with_the_landed_transport(tmp_path):
    """kmbuf-v4 (head) against 7.3 (base): X[kmbuf] is compared with X[bufpool], X[kmbuf-zero-copy]
    with X[zero-copy]; the head's own skipped X[bufpool] is compared with the base's as usual."""
    e = "tests/vm/test_edge_teardown.py::test_abort_via_fusectl"
    base = run_folder(tmp_path / "001-v7.3-default", "v7.3", "7.3.4", [
        case(f"{T}[bufpool]", "PASS"), case(f"{T}[zero-copy]", "PASS"), case(f"{e}[bufpool]", "PASS"),
        case(f"{T}[kmbuf]", "SKIP", reason="target v7.3 does not promise transport kmbuf")])
    head = run_folder(tmp_path / "002-kmbuf-v4-default", "kmbuf-v4", "7.2.13-gb118", [
        case(f"{T}[bufpool]", "SKIP"), case(f"{T}[kmbuf]", "PASS"), case(f"{T}[kmbuf-zero-copy]", "FAIL"),
        case(f"{e}[kmbuf]", "XFAIL"), case("tests/vm/test_edge_kmbuf.py::test_memlock_uncharged", "PASS")])
    r = C.compare(base, head)
    assert {(p["nodeid"], p["base_nodeid"]) for p in r["paired"]} == {
        (f"{T}[kmbuf]", f"{T}[bufpool]"), (f"{T}[kmbuf-zero-copy]", f"{T}[zero-copy]"),
        (f"{e}[kmbuf]", f"{e}[bufpool]")}
    assert [x["nodeid"] for x in r["regressions"]] == [f"{T}[kmbuf-zero-copy]"]
    assert {x["nodeid"]: x["head"] for x in r["changed"]} == {f"{T}[bufpool]": "SKIP", f"{e}[kmbuf]": "XFAIL"}
    assert [x["nodeid"] for x in r["only_head"]] == ["tests/vm/test_edge_kmbuf.py::test_memlock_uncharged"]
    assert r["only_base"] == []
    assert "paired across transports (head ~ base): kmbuf ~ bufpool, kmbuf-zero-copy ~ zero-copy (3 tests)" \
        in C.render(r)
    assert C.compare(base, head, pairs={})["paired"] == []


def test_two_runs_of_one_target_pair_nothing(tmp_path):
    """Before/after runs of v7.3: both skip X[kmbuf]; it is not paired with X[bufpool] (which
    would show the same kernel's PASS -> SKIP as a change)."""
    cases = [case(f"{T}[bufpool]", "PASS"), case(f"{T}[kmbuf]", "SKIP", reason="target v7.3 does not promise kmbuf")]
    base = run_folder(tmp_path / "001-v7.3-default", "v7.3", "7.3.4", cases)
    head = run_folder(tmp_path / "002-v7.3-default", "v7.3", "7.3.4", cases)
    r = C.compare(base, head)
    assert r["paired"] == [] and not r["regressions"] and not r["changed"]
