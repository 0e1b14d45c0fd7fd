"""Drive the mutants: apply one, build, run the suite, restore; record; next.

`loop()` is the tree-and-ledger part (used as is by the unit tests with a stand-in
evaluator); `KernelEvaluator` is the kernel part: an incremental build in the workspace's
pinned build folder (a compile error: "discarded: does not compile") and one pytest session
of the VM tests (or -k) with `-x` (the guest checks then stop at their first failing case
too: harness.plugin.state.guest_stop_args), the tests most likely to catch it first, quick
ones first (harness.mutate.order), bounded per mutant (harness.mutate.baseline.bound_of the
clean suite's time). Cost per mutant here: the build (13-33 s for one file, plus the previous
mutant's file rebuilt), a guest boot (30-60 s under TCG), then the tests up to the first
failure (a caught mutant) or all of them (a survivor: the whole suite, as long as the clean
baseline).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import config
from harness.errors import BuildError, InfraError
from harness.log import fmt_duration
from harness.mutate import baseline as bl
from harness.mutate import ledger as lg
from harness.mutate.guard import Journal, applied, interruptible
from harness.mutate.operators import Mutant
from harness.mutate.order import PLAN_ENV  # the JSON plan of the test order

log = logging.getLogger(__name__)

#: Seconds a test session gets after SIGTERM to stop its guest before it is killed.
TERM_GRACE = 60.0
#: This many "error" outcomes in a row stop the run: the suite itself does not run.
MAX_ERRORS = 2

Evaluate = Callable[[Mutant, Path], dict]


@dataclass
class Budget:
    """--max is applied by the caller; this is --time-budget: no mutant starts once the time
    is spent, nor when less is left than the mean of the mutants so far took."""

    seconds: float | None
    start: float = field(default_factory=time.monotonic)
    spent: list[float] = field(default_factory=list)

    def allows_another(self) -> bool:
        if self.seconds is None:
            return True
        left = self.seconds - (time.monotonic() - self.start)
        mean = sum(self.spent) / len(self.spent) if self.spent else 0.0
        return left > 0 and left >= mean


def loop(tree: Path, mutants: list[Mutant], ledger: lg.Ledger, journal: Journal, evaluate: Evaluate,
         budget: Budget, on_record: Callable[[list[dict]], None]) -> tuple[list[dict], str]:
    """Evaluate each mutant not in the ledger with it applied to `tree` (always restored),
    in order; returns (records in the mutants' order, why it stopped: "done", "budget" or
    "errors"). `on_record` gets the records after every mutant (mutants.json)."""
    texts: dict[str, str] = {}
    records: list[dict] = []
    errors = 0
    with interruptible():
        for m in mutants:
            old = ledger.records.get(m.id)
            if old is not None:
                records.append({**old, "resumed": True})
                on_record(records)
                continue
            if not budget.allows_another():
                return records, "budget"
            text = texts.setdefault(m.file, (tree / m.file).read_bytes().decode("latin-1"))
            base = {"id": m.id, "operator": m.operator, "file": m.file, "line": m.line,
                    "location": f"{m.file}:{m.line}", "function": m.function, "diff": lg.diff_of(text, m)}
            start = time.monotonic()
            with applied(tree, m, journal):
                result = evaluate(m, tree)
            record = {**base, "caught_by": None, "note": "", "build_seconds": None, **result,
                      "seconds": round(time.monotonic() - start, 1)}
            budget.spent.append(record["seconds"])
            ledger.add(record)
            records.append(record)
            on_record(records)
            log.info("mutate: %s %s %s: %s%s (%s)", m.id, m.operator, record["location"], record["outcome"].upper(),
                     f" by {record['caught_by']}" if record["caught_by"] else "", fmt_duration(record["seconds"]))
            errors = errors + 1 if record["outcome"] == lg.ERROR else 0
            if errors >= MAX_ERRORS:
                return records, "errors"
    return records, "done"


@dataclass
class KernelEvaluator:
    """Build the mutated tree, then one pytest session of the suite against it."""

    target_file: Path
    profile: str
    build_dir: Path
    results: Path
    ledger: lg.Ledger
    k: str | None = None
    jobs: int | str = 0
    accel: str | None = None
    #: seconds a mutant's session may take (the cli sets it from the baseline: bl.bound_of)
    timeout: float = bl.DEFAULT_BOUND
    #: clean seconds per test node id (the baseline's, then tests first seen passing in a
    #: mutant's session): the order's measure of a test's cost
    seconds: dict[str, float] = field(default_factory=dict)
    #: the note of a "timeout" record (what the bound was, whether it counts as caught)
    timeout_note: str = ""

    def build(self) -> float:
        """Build the tree as it is (the baseline before any mutant): seconds taken."""
        from harness.kernel import obtain

        k = obtain(config.load_target(str(self.target_file)), self.profile, build_dir=self.build_dir)
        return k.built.seconds

    def __call__(self, m: Mutant, tree: Path) -> dict:
        start = time.monotonic()
        try:
            self.build()
        except BuildError as exc:
            first = exc.message.split("kernel build failed: ", 1)[-1].splitlines()[0]
            return {"outcome": lg.DISCARDED, "note": f"does not compile: {first}",
                    "build_seconds": round(time.monotonic() - start, 1)}
        built = round(time.monotonic() - start, 1)
        folder = self.results / m.id
        rc, timed_out, _ = self.session(folder, {"catchers": lg.catchers(self.ledger.history(), m),
                                                 "seconds": self.seconds}, self.timeout)
        summary, run = _session_result(folder)
        for node, secs in lg.clean_seconds(summary).items():  # the baseline's measure stays
            self.seconds.setdefault(node, secs)
        outcome, caught_by, note = lg.outcome_of(summary, rc, timed_out)
        if outcome == lg.TIMEOUT and self.timeout_note:
            note = self.timeout_note
        return {"outcome": outcome, "caught_by": caught_by, "note": note, "build_seconds": built,
                "run": str(run or folder)}

    def baseline(self, folder: Path) -> bl.Baseline:
        """Run the suite on the tree as it is (unmutated, built): bl.judge's Baseline, or
        InfraError naming the test that fails without a mutant."""
        rc, timed_out, seconds = self.session(folder, {"catchers": {}, "seconds": {}}, bl.BASELINE_BOUND)
        summary, run = _session_result(folder)
        return bl.judge(summary, rc, timed_out, seconds, run or folder)

    def argv(self, folder: Path) -> list[str]:
        argv = [sys.executable, "-m", "pytest", "tests/vm", "-x", "-p", "no:cacheprovider",
                "-p", "harness.mutate.order", "--target", str(self.target_file), "--profile", self.profile,
                "--results-dir", str(folder), "-m", "not slow"]
        argv += ["-k", self.k] if self.k else []
        argv += ["-n", str(self.jobs)] if self.jobs else []
        return argv + (["--accel", self.accel] if self.accel else [])

    def session(self, folder: Path, plan: dict, bound: float) -> tuple[int | None, bool, float]:
        """One pytest session into `folder`, its tests ordered by `plan` (folder/order.json;
        the order used lands in order.json.order.txt), its own process group; SIGTERM, then
        SIGKILL, at `bound` seconds or on an interrupt of ours. (returncode, timed out, wall
        seconds)."""
        from harness.kernel import BUILD_DIR_ENV
        from harness.vm.kept import KEPT_VM_ENV

        folder.mkdir(parents=True, exist_ok=True)
        plan_file = folder / "order.json"
        plan_file.write_text(json.dumps(plan, indent=1, sort_keys=True))
        env = dict(os.environ, **{BUILD_DIR_ENV: str(self.build_dir), PLAN_ENV: str(plan_file), KEPT_VM_ENV: "0"})
        start = time.monotonic()
        with (folder / "pytest.log").open("w") as out:
            proc = subprocess.Popen(self.argv(folder), cwd=config.REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                return proc.wait(timeout=bound), False, time.monotonic() - start
            except subprocess.TimeoutExpired:
                out.write(f"\nfuse-harness mutate: stopped after {bound:.0f}s\n")
                _stop(proc)
                return proc.returncode, True, time.monotonic() - start
            except BaseException:
                _stop(proc)
                raise


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the session's process group (the plugin then stops its guest), SIGKILL later."""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _session_result(folder: Path) -> tuple[dict | None, Path | None]:
    """(summary.json, run folder) of the session pytest ran with --results-dir folder."""
    for run in sorted(folder.glob("[0-9][0-9][0-9]-*")):
        try:
            return json.loads((run / "summary.json").read_text()), run
        except (OSError, ValueError):
            return None, run
    return None, None


def check_builds(evaluator: KernelEvaluator) -> float:
    """The unmutated tree must build; InfraError (exit 3) otherwise: every mutant would be
    "discarded" for a reason of its own."""
    try:
        return evaluator.build()
    except BuildError as exc:
        raise InfraError(f"the unmutated tree does not build: {exc.message.splitlines()[0]}", exc.hint) from None
