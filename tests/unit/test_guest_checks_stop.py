"""guest/checks/runner.py's case loop without a guest: real KTAP lines from fake cases, and the
`check` options that turn the stop at the first failure on (the host passes them under -x)."""

from __future__ import annotations

import io
import time

import pytest

from guest.__main__ import parser
from guest.checks.context import Ctx, Skip
from guest.checks.runner import STOPPED, run_cases
from guest.ktap import Ktap
from harness.results import ktap


def passes(ctx: Ctx) -> None:
    ctx.facts.setdefault("ran", []).append("passes")


def fails(ctx: Ctx) -> None:
    ctx.facts.setdefault("ran", []).append("fails")
    raise AssertionError("read back 3 bytes, wrote 4")


def errs(ctx: Ctx) -> None:
    ctx.facts.setdefault("ran", []).append("errs")
    raise OSError(5, "Input/output error")


def skips(ctx: Ctx) -> None:
    ctx.facts.setdefault("ran", []).append("skips")
    raise Skip("not offered here")


def later(ctx: Ctx) -> None:
    ctx.facts.setdefault("ran", []).append("later")


def hangs(ctx: Ctx) -> None:
    ctx.facts.setdefault("ran", []).append("hangs")
    time.sleep(2)


def run(cases: list, stop_unless: list[str] | None, tmp_path, timeout: float = 10.0  # noqa: ANN001
        ) -> tuple[bool, dict[str, tuple[str, str]], list]:
    """(stopped, {case: (verdict, reason)} as the host parses the KTAP, cases that ran)."""
    out = io.StringIO()
    k = Ktap(out)
    k.header(len(cases))
    # the mount point is a plain folder: a timeout's teardown finds nothing mounted there
    ctx = Ctx(str(tmp_path), str(tmp_path), "iovec", "memory", 1, 10, k.diag)
    stopped = run_cases(cases, ctx, k, timeout, lambda n: "", stop_unless)
    parsed = {c.name: (c.verdict.value, c.reason) for c in ktap.parse(out.getvalue())}
    return stopped, parsed, ctx.facts.get("ran", [])


def test_without_the_option_every_case_runs(tmp_path) -> None:  # noqa: ANN001
    stopped, lines, ran = run([passes, fails, errs, later], None, tmp_path)
    assert not stopped and ran == ["passes", "fails", "errs", "later"]
    assert [v for v, _ in lines.values()] == ["PASS", "FAIL", "ERROR", "PASS"]


@pytest.mark.parametrize("bad", [fails, errs])
def test_the_first_failure_stops_the_rest(bad, tmp_path) -> None:  # noqa: ANN001
    stopped, lines, ran = run([passes, skips, bad, later, passes], [], tmp_path)
    assert stopped and ran == ["passes", "skips", bad.__name__]
    assert lines[f"iovec.{bad.__name__}"][0] in ("FAIL", "ERROR")
    assert lines["iovec.later"] == ("SKIP", STOPPED)
    assert lines["iovec.skips"] == ("SKIP", "not offered here")  # a skip is no failure: no stop there


def test_a_known_failing_case_does_not_stop_the_run(tmp_path) -> None:  # noqa: ANN001
    """A known issue's case (its pattern from known-issues.yaml) fails as expected: the cases after
    it must still run, or a mutant breaking one of them would pass as the known XFAIL."""
    stopped, lines, ran = run([fails, later, errs, passes], ["*.fails"], tmp_path)
    assert stopped and ran == ["fails", "later", "errs"]
    assert lines["iovec.fails"][0] == "FAIL" and lines["iovec.later"][0] == "PASS"
    assert lines["iovec.passes"] == ("SKIP", STOPPED)


def test_a_timeout_stops_the_rest(tmp_path) -> None:  # noqa: ANN001
    stopped, lines, ran = run([hangs, later], [], tmp_path, timeout=0.2)
    assert stopped and ran == ["hangs"]
    assert lines["iovec.hangs"][0] == "TIMEOUT" and lines["iovec.later"] == ("SKIP", STOPPED)
    stopped, lines, ran = run([hangs, later], None, tmp_path, timeout=0.2)  # as before: the mount is gone
    assert not stopped and lines["iovec.later"] == ("SKIP", "mount aborted after a timeout")


def test_a_run_without_failure_is_not_stopped(tmp_path) -> None:  # noqa: ANN001
    stopped, lines, ran = run([passes, later], [], tmp_path)
    assert not stopped and ran == ["passes", "later"]
    assert set(lines.values()) == {("PASS", "")}


def test_check_options() -> None:
    args = parser().parse_args(["check", "--transport", "iovec"])
    assert (args.stop_at_first_failure, args.known_failing) == (False, [])
    args = parser().parse_args(["check", "--transport", "iovec", "--stop-at-first-failure",
                                "--known-failing", "*.fsx", "*.fio"])
    assert (args.stop_at_first_failure, args.known_failing) == (True, ["*.fsx", "*.fio"])


@pytest.mark.parametrize(("maxfail", "known", "expected"), [
    (0, ("*.fsx",), []),
    (2, (), []),
    (1, (), ["--stop-at-first-failure"]),
    (1, ("*.fsx", "*.fio"), ["--stop-at-first-failure", "--known-failing", "*.fsx", "*.fio"]),
])
def test_host_asks_for_the_stop_under_x_only(maxfail: int, known: tuple, expected: list[str]) -> None:
    """tests/vm/test_transports.py::test_guest_checks passes guest_stop_args(item): only under
    pytest -x (--maxfail 1), with the known issue's case patterns; the command line reaches the
    guest's resident runner and the `check` parser as those very options."""
    import shlex
    from types import SimpleNamespace

    from harness.plugin.state import KNOWN_CASES, guest_stop_args
    from harness.vm.control import runner_request

    item = SimpleNamespace(config=SimpleNamespace(getoption=lambda name, default=None: {"maxfail": maxfail}[name]),
                           stash={KNOWN_CASES: known})
    opts = guest_stop_args(item)  # type: ignore[arg-type]
    assert opts == expected
    cmd = f"cd /src && /usr/bin/python3 -m guest {f'check --transport kmbuf {shlex.join(opts)}'.rstrip()}"
    argv = runner_request(cmd)["argv"]
    args = parser().parse_args(argv)
    assert (args.stop_at_first_failure, args.known_failing) == (bool(expected), list(known) if expected else [])
