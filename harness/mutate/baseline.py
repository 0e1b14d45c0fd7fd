"""The clean baseline: the suite run once on the unmutated tree, before any mutant.

It answers three questions a mutant's verdict depends on:

1. Does the suite pass without a mutant? A test that fails on the unmutated tree would
   "catch" every mutant; the run stops instead (InfraError, exit 3) naming that test.
2. How long does a clean suite take here (T, the test session's wall time, guest boot
   included)? A mutant's session is bounded by `bound_of(T)`: BOUND_FACTOR x T, at least
   T + BOUND_MARGIN (TCG boots vary by tens of seconds). A session still running at the
   bound took half again as long as the clean suite with no test failing first: the mutant
   hung the kernel or the server, or slowed it, which is a detection ("timeout", counted as
   caught: `timeouts_count`). Without a baseline (--no-baseline) the bound is DEFAULT_BOUND
   and a timeout is not counted as caught: nothing shows the clean suite fits in it.
3. How long does each test take on a clean pass? Those seconds order the mutants' tests
   (harness.mutate.order: quick ones first).

Cached in <workspace>/baselines/<key>.json, the key made of the target (the workspace's
target.yaml: source, kconfig, promises), profile, tree head, -k, -n, accelerator and the
suite's fingerprint (the text of tests/vm/, tests/conftest.py, guest/, harness/plugin/ and
known-issues.yaml): another function or seed of the same tree reuses it; an edit of the suite
measures again. A file: {"key": {...}, "seconds": T, "tests": {node id: seconds}, "run": the
session's run folder, "measured_at": ISO time}.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache import key_of, write_json_atomic
from harness.errors import InfraError
from harness.mutate import ledger as lg

#: A mutant's session may take this many times the clean suite's time ...
BOUND_FACTOR = 1.5
#: ... and at least this many seconds more than it.
BOUND_MARGIN = 120.0
#: Seconds a mutant's session may take without a baseline (--no-baseline).
DEFAULT_BOUND = 900.0
#: Seconds the baseline session itself may take (a suite slower than this is not one to mutate with).
BASELINE_BOUND = 3600.0
#: What the suite's fingerprint reads, relative to the checkout (folders: their *.py files).
SUITE_PARTS = ("tests/vm", "tests/conftest.py", "guest", "harness/plugin", "known-issues.yaml")


def bound_of(seconds: float) -> float:
    """The per-mutant bound for a clean suite of `seconds` (see the module docstring)."""
    return float(round(max(BOUND_FACTOR * seconds, seconds + BOUND_MARGIN)))


def timeouts_count(clean_seconds: float | None, bound: float) -> bool:
    """Whether a mutant's "timeout" is a detection: only with a baseline that passed in
    `clean_seconds`, and a bound at least bound_of(clean_seconds) (an explicit
    --mutant-timeout below it can cut a slow clean run short)."""
    return clean_seconds is not None and bound >= bound_of(clean_seconds)


def score_rule(clean_seconds: float | None, bound: float) -> str:
    """The legend of the score, for mutants.json and the report."""
    if timeouts_count(clean_seconds, bound):
        return (f"score = (caught + timeout) / (caught + survived + timeout). A timeout is a session still "
                f"running at the bound ({bound:.0f} s) with no test failed: the unmutated tree's suite passed in "
                f"{clean_seconds:.0f} s, so the mutant hung or slowed the kernel: a detection. A mutant that does "
                "not compile is discarded and not counted.")
    why = ("no clean baseline was run (--no-baseline)" if clean_seconds is None else
           f"the bound ({bound:.0f} s) is under {BOUND_FACTOR} x the clean suite's {clean_seconds:.0f} s")
    return (f"score = caught / (caught + survived + timeout): a timeout (no verdict within {bound:.0f} s) is not "
            f"counted as caught, as {why}. A mutant that does not compile is discarded and not counted.")


def fingerprint(repo: Path) -> str:
    """A key of the suite's text: every *.py of SUITE_PARTS' folders and the listed files."""
    h = hashlib.sha256()
    for part in SUITE_PARTS:
        path = repo / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@dataclass
class Baseline:
    """A clean pass of the suite: its wall time (s), each test's seconds, its run folder."""

    seconds: float
    tests: dict[str, float] = field(default_factory=dict)
    run: str = ""
    measured_at: str = ""
    cached: bool = False

    def to_json(self) -> dict:
        return {"seconds": self.seconds, "tests": self.tests, "run": self.run, "measured_at": self.measured_at}


class Store:
    """The cached baselines of a workspace (folder/<key>.json)."""

    def __init__(self, folder: Path, key_items: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.key_items = key_items
        self.path = folder / f"{key_of(key_items)}.json"

    def load(self) -> Baseline | None:
        try:
            data = json.loads(self.path.read_text())
            return Baseline(float(data["seconds"]), {str(k): float(v) for k, v in data.get("tests", {}).items()},
                            str(data.get("run", "")), str(data.get("measured_at", "")), cached=True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, baseline: Baseline) -> None:
        write_json_atomic(self.path, {"key": self.key_items, **baseline.to_json()})


def judge(summary: dict | None, returncode: int | None, timed_out: bool, seconds: float, folder: Path) -> Baseline:
    """The Baseline of a clean session, or InfraError (exit 3) when the suite does not pass on
    the unmutated tree: a failing test (named), a session past BASELINE_BOUND, no test run."""
    cases = (summary or {}).get("cases", [])
    bad = [c for c in cases if c.get("verdict") in lg.CATCHING]
    hint = (f"see {folder}; a mutant cannot be judged by a test that fails without it: fix the test or the tree, "
            "make it a known issue, or leave it out with -k 'not NAME'")
    if bad:
        c = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        reason = str(c.get("reason") or "").strip().splitlines()
        raise InfraError(f"the suite fails on the unmutated tree: {c.get('nodeid')} {c.get('verdict')}{more}"
                         + (f": {reason[0][:200]}" if reason else ""), hint)
    if timed_out:
        raise InfraError(f"the suite did not finish on the unmutated tree within {BASELINE_BOUND:.0f} s",
                         f"see {folder}/pytest.log; narrow it with -k")
    if summary is None or returncode != 0 or not any(c.get("verdict") == "PASS" for c in cases):
        raise InfraError(f"the suite did not run on the unmutated tree (pytest exit {returncode}, "
                         f"{len(cases)} tests)", f"see {folder}/pytest.log; does -k select any test? "
                                                 "`fuse-harness run` on this target must pass first")
    return Baseline(round(seconds, 1), lg.clean_seconds(summary), str(folder),
                    time.strftime("%Y-%m-%dT%H:%M:%S%z"))
