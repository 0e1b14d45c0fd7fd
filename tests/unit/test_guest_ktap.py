"""guest.ktap: line format, directives, totals and exit codes."""

from __future__ import annotations

import io

from guest.ktap import FAIL, PASS, SKIP, Ktap


def _doc(results: list[tuple[str, str, str]]) -> tuple[list[str], int]:
    out = io.StringIO()
    k = Ktap(out)
    k.header(len(results))
    for desc, status, reason in results:
        k.result(desc, status, reason)
    k.totals()
    return out.getvalue().splitlines(), k.exit_code()


def test_header_plan_and_lines() -> None:
    lines, rc = _doc([("bufpool.io_sizes", PASS, ""), ("bufpool.fio", SKIP, "fio not installed"),
                      ("bufpool.fsx", FAIL, "")])
    assert lines[:2] == ["KTAP version 1", "1..3"]
    assert lines[2] == "ok 1 bufpool.io_sizes"
    assert lines[3] == "ok 2 bufpool.fio # SKIP fio not installed"
    assert lines[4] == "not ok 3 bufpool.fsx"
    assert lines[5] == "# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0"
    assert rc == 1


def test_error_and_timeout_directives_fail_the_run() -> None:
    lines, rc = _doc([("t.a", "error", "boom"), ("t.b", "timeout", "no result after 5s")])
    assert lines[2] == "not ok 1 t.a # ERROR boom"
    assert lines[3] == "not ok 2 t.b # TIMEOUT no result after 5s"
    assert rc == 1
    assert "error:1" in lines[-1] and "fail:1" in lines[-1]


def test_all_skipped_exits_4_and_all_pass_exits_0() -> None:
    assert _doc([("t.a", SKIP, "x")])[1] == 4
    assert _doc([("t.a", PASS, ""), ("t.b", SKIP, "y")])[1] == 0


def test_hash_and_newlines_are_removed_from_descriptions() -> None:
    lines, _ = _doc([("t.a # b\nc", SKIP, "why # not")])
    assert lines[2] == "ok 1 t.a b c # SKIP why not"


def test_diag_prefixes_every_line() -> None:
    out = io.StringIO()
    Ktap(out).diag("one\ntwo")
    assert out.getvalue() == "# one\n# two\n"
