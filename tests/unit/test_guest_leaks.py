"""guest.edge.leaks and the no_leaks case every edge scenario ends with (run here on the host:
the counters are the host's own, the scenarios are fakes)."""

from __future__ import annotations

from guest.edge import core, leaks
from guest.edge.leaks import Snapshot


def test_leaked_names_each_counter():
    before = Snapshot(frozenset({"40"}), 0, 100)
    assert leaks.leaked(before, before) == []
    now = Snapshot(frozenset({"40", "41", "9"}), 2048, 164)
    assert leaks.leaked(before, now) == [
        "FUSE connection(s) 9, 41 still in /sys/fs/fuse/connections",
        "VmLck 2048 kB, was 0 kB",
        "pinned pages (nr_foll_pin_acquired - released) 164, was 100",
    ]


def test_fewer_pins_or_connections_are_not_leaks():
    """An earlier test's teardown may still be releasing: only growth counts."""
    before = Snapshot(frozenset({"40", "41"}), 64, 100)
    assert leaks.leaked(before, Snapshot(frozenset({"41"}), 0, 90)) == []


def test_a_negative_pin_baseline_counts_as_zero():
    """The counters are read one after the other: -5 was seen with nothing pinned."""
    before = Snapshot(frozenset(), 0, -5)
    assert leaks.leaked(before, Snapshot(frozenset(), 0, 0)) == []
    assert leaks.leaked(before, Snapshot(frozenset(), 0, 3)) != []


def test_unreadable_counters_are_not_leaks():
    assert leaks.leaked(Snapshot(frozenset(), None, None), Snapshot(frozenset(), 10, 5)) == []


def test_snapshot_reads_this_machine():
    s = leaks.snapshot()
    assert isinstance(s.connections, frozenset)
    assert s.vmlck_kb is not None and s.vmlck_kb >= 0


def _run(capsys, fn, cases=("a",)):
    rc = core.run("fake", list(cases), fn, None, 30.0)
    return rc, capsys.readouterr().out


def test_every_scenario_ends_with_no_leaks(capsys):
    rc, out = _run(capsys, lambda ctx, args: ctx.result("a", True))
    assert "1..3" in out  # the scenario's case, strict_server, no_leaks
    assert "ok 2 fake.strict_server # SKIP no ring request checked in the scenario" in out
    assert "ok 3 fake.no_leaks" in out
    assert rc == 0


def test_no_leaks_fails_naming_the_locked_memory(capsys, monkeypatch):
    monkeypatch.setenv("FUSE_HARNESS_TIME_SCALE", "0.05")
    grow = iter([0] + [4096] * 1000)
    monkeypatch.setattr(leaks, "_vmlck_kb", lambda: next(grow))
    rc, out = _run(capsys, lambda ctx, args: ctx.result("a", True))
    assert "not ok 3 fake.no_leaks" in out
    assert "VmLck 4096 kB, was 0 kB" in out
    assert rc != 0


def test_no_leaks_skips_when_nothing_ran(capsys):
    rc, out = _run(capsys, lambda ctx, args: ctx.result("a", None, reason="no kmbuf"))
    assert "ok 3 fake.no_leaks # SKIP nothing ran" in out
