"""pytest plugin of `fuse-harness mutate` (`-p harness.mutate.order`): the tests most likely to
catch the mutant run first, and among equals the quick ones.

$FUSE_HARNESS_MUTATE_ORDER names the JSON plan the drive writes for each mutant::

    {"catchers": {nodeid: [tier, catches]},   # harness.mutate.ledger.catchers
     "seconds": {nodeid: seconds}}            # clean durations measured in earlier sessions

The order, with pytest's -x (a caught mutant costs the tests up to the catching one):

1. tier 0: tests that caught earlier mutants of the same function; tier 1: of the same file;
2. then every other test;
3. within each group, the fewest expected seconds per catch first: a test's seconds divided by
   its catches in its tier (outside the tiers: its seconds). A test's seconds are its duration
   measured on a clean pass (the baseline session, or an earlier mutant's session where it
   passed), else the estimate of its `long(seconds)` marker, else QUICK (a test without that
   marker takes less than 20 s under TCG). So the quick edge tests and the shell smoke tests
   run before the guest-check suites (about a minute each) and the parity oracle;
4. crash probes (`crash_probe = True`, tests/conftest.py) stay last outside the tiers; ties
   keep collection order. Harness self-tests (`harness_selftest = True`: dmesg
   attribution in the session's guest, and crash recovery with attribution in a nested session
   that boots three guests) are deselected: they test the harness, not the kernel.

The plugin reorders after every other plugin (a wrapper hook): after tests/conftest.py's crash
probes and harness.plugin.xdist's long-first order. The order it used is written beside the
plan (`<plan>.order.txt`: position, tier, seconds and the test), so a report can say why a test
ran where it did. Without the variable, or with an unreadable plan, the plugin does nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

PLAN_ENV = "FUSE_HARNESS_MUTATE_ORDER"
#: Seconds assumed for a test neither measured nor marked `long` (the marker is for 20 s or more).
QUICK = 10.0
#: The tier of a test that caught no earlier mutant of this function or file.
UNTIERED = 2


@dataclass(frozen=True)
class Collected:
    """What the order needs of one collected test."""

    nodeid: str
    long_seconds: float | None = None  # the `long` marker's estimate, None without the marker
    crash_probe: bool = False


def seconds_of(test: Collected, measured: dict[str, float]) -> tuple[float, str]:
    """(seconds, where they come from: "measured", "long marker" or "assumed quick")."""
    if test.nodeid in measured:
        return float(measured[test.nodeid]), "measured"
    if test.long_seconds is not None:
        return float(test.long_seconds), "long marker"
    return QUICK, "assumed quick"


def sort_key(test: Collected, index: int, plan: dict) -> tuple:
    """(tier, crash probe outside the tiers, seconds per catch, collection index)."""
    tier, catches = (plan.get("catchers") or {}).get(test.nodeid, (UNTIERED, 0))
    seconds, _ = seconds_of(test, plan.get("seconds") or {})
    probe_last = tier == UNTIERED and test.crash_probe
    return (tier, probe_last, seconds / max(int(catches), 1), index)


def order(tests: list[Collected], plan: dict) -> list[int]:
    """The new order of `tests` (indexes into it) under `plan` (see the module docstring)."""
    return sorted(range(len(tests)), key=lambda i: sort_key(tests[i], i, plan))


def explain(tests: list[Collected], indexes: list[int], plan: dict) -> str:
    """One line per test in the order used: position, tier, seconds (and their source), catches."""
    names = {0: "caught this function", 1: "caught this file", UNTIERED: "-"}
    lines = []
    for pos, i in enumerate(indexes, 1):
        t = tests[i]
        tier, catches = (plan.get("catchers") or {}).get(t.nodeid, (UNTIERED, 0))
        seconds, source = seconds_of(t, plan.get("seconds") or {})
        why = names.get(tier, str(tier)) + (f" x{catches}" if tier != UNTIERED else "")
        lines.append(f"{pos:4d}  {why:24} {seconds:7.1f}s {source:13} {t.nodeid}"
                     + ("  (crash probe)" if t.crash_probe else ""))
    return "\n".join(lines) + "\n"


def load_plan(path: str | None) -> dict | None:
    """The plan at `path`, None without one or when it cannot be read."""
    if not path:
        return None
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None


def _test(item: pytest.Item) -> Collected:
    mark = item.get_closest_marker("long")
    long_seconds = None if mark is None else float(mark.args[0] if mark.args else 20)
    return Collected(item.nodeid, long_seconds, bool(getattr(getattr(item, "function", None), "crash_probe", False)))


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):  # noqa: ANN201
    result = yield
    path = os.environ.get(PLAN_ENV)
    plan = load_plan(path)
    if plan is None:
        return result
    selftests = [it for it in items if getattr(getattr(it, "function", None), "harness_selftest", False)]
    if selftests:  # they test the harness in a nested session of their own, never the mutant
        config.hook.pytest_deselected(items=selftests)
        items[:] = [it for it in items if it not in selftests]
    tests = [_test(it) for it in items]
    indexes = order(tests, plan)
    items[:] = [items[i] for i in indexes]
    if (getattr(config, "workerinput", None) or {}).get("workerid", "gw0") == "gw0":  # xdist workers agree
        with contextlib.suppress(OSError):
            Path(f"{path}.order.txt").write_text(explain(tests, indexes, plan))
    return result
