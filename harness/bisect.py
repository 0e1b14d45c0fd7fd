"""Find the commit that broke one test: `git bisect` in a private clone, one incremental build dir.

    fuse-harness bisect --tree PATH --good REF --bad REF --test NODEID [--repeat N] [--target T]

The user's repository is only read (rev-parse, merge-base, `clone --shared`); the bisection
runs in a private clone under the cache, so the user's checkout and bisect state are never
touched. Every step builds in ONE build folder per (tree, target, profile), so a step after a
change in fs/fuse is an incremental make. Each step runs exactly the given pytest node N times
in a subprocess (a results folder per repetition): bad if any repetition fails, good only if
all pass, skip (git bisect's exit 125) when the kernel does not build, the guest does not
boot or the test errors. The repetitions of a step share one guest: the first boots it and
keeps it (harness.vm.kept), the next adopt it, and it is stopped before the next step's build;
FUSE_HARNESS_KEPT_VM=0 boots one per repetition.
The end: first bad commit, bisect.json, bisect.log, reproduce.sh.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import config
from harness.cache import INTREE_PREFIX, cache_dir, new_run_dir, safe_name, write_json_atomic
from harness.errors import HarnessError, InfraError, MissingTool, UserError
from harness.log import fmt_duration
from harness.vm import kept
from harness.vm.kept import KEPT_VM_ENV

log = logging.getLogger(__name__)

GOOD, BAD, SKIP = "good", "bad", "skip"
#: `git bisect run` exit codes of a step verdict.
EXIT = {GOOD: 0, BAD: 1, SKIP: 125}
#: How one repetition's test verdict counts: a failure is bad, a pass good, anything else unknown.
_REP = {"PASS": GOOD, "XPASS": GOOD, "FAIL": BAD, "TIMEOUT": BAD, "XFAIL": BAD}
#: Wall-clock limit of one pytest repetition (build reuse + boot + test).
REP_TIMEOUT = 3600.0


class BisectError(UserError):
    """The tree, a ref or the test cannot be bisected."""


# -- pure parts ---------------------------------------------------------------------
def rep_verdict(test_verdict: str | None) -> str:
    """One repetition's test verdict (PASS, FAIL, ..., None when no result) as good/bad/skip."""
    return _REP.get(test_verdict or "", SKIP)


def classify(test_verdicts: list[str | None]) -> str:
    """A step from its repetitions: bad if any failed, good only if all passed, else skip."""
    reps = [rep_verdict(v) for v in test_verdicts]
    if BAD in reps:
        return BAD
    if reps and all(r == GOOD for r in reps):
        return GOOD
    return SKIP


@dataclass
class Step:
    """One tested commit."""

    commit: str
    verdict: str
    seconds: float
    tests: list[str | None] = field(default_factory=list)
    note: str = ""
    runs: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"commit": self.commit, "verdict": self.verdict, "seconds": round(self.seconds, 1),
                "tests": self.tests, "note": self.note, "runs": self.runs}


def case_verdict(summary: dict | None, nodeid: str) -> str | None:
    """The verdict of `nodeid` in a summary.json dict (None when it has no such case)."""
    found = None
    for case in (summary or {}).get("cases", []):
        if case.get("nodeid") == nodeid or case.get("nodeid", "").endswith("/" + nodeid):
            found = case.get("verdict")
    return found


def pytest_argv(test: str, target: str, profile: str, worktree: Path, results: Path,
                accel: str | None = None) -> list[str]:
    """The pytest arguments of one repetition (run from the harness checkout)."""
    argv = [test, "-p", "no:cacheprovider", "--target", target, "--profile", profile,
            "--source", f"path:{worktree}", "--results-dir", str(results)]
    return argv + (["--accel", accel] if accel else [])


def reproducer(tree: Path, good: str, bad: str, test: str, repeat: int, target: str, profile: str,
               worktree: Path, build_dir: Path, first_bad: str | None) -> str:
    """Shell lines that redo the bisection, and run the test on the first bad commit alone."""
    lines = [f".venv/bin/fuse-harness bisect --tree {shlex.quote(str(tree))} --good {shlex.quote(good)} "
             f"--bad {shlex.quote(bad)} --test {shlex.quote(test)} --repeat {repeat} "
             f"--target {shlex.quote(target)} --profile {profile}"]
    if first_bad:
        run = shlex.join([".venv/bin/python", "-m", "pytest", *pytest_argv(test, target, profile, worktree,
                                                                          Path("results"))])
        lines += ["# the test alone on the first bad commit (private clone, pinned build folder):",
                  f"git -C {shlex.quote(str(worktree))} checkout --quiet --detach {first_bad}",
                  f"FUSE_HARNESS_BUILD_DIR={shlex.quote(str(build_dir))} {run}"]
    return "\n".join(lines)


def parse_bisect_output(text: str) -> tuple[str | None, list[str]]:
    """(first bad commit, candidates) from `git bisect good|bad|skip` output; (None, []) to go on."""
    m = re.search(r"^([0-9a-f]{40}) is the first bad commit", text, re.M)
    if m:
        return m.group(1), [m.group(1)]
    if "only 'skip'ped commits left" in text:
        return None, re.findall(r"^([0-9a-f]{40})$", text, re.M)
    return None, []


# -- git ----------------------------------------------------------------------------
def _git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    from harness.series.gitops import git_env

    try:
        proc = subprocess.run(["git", "-c", "gc.auto=0", *args], cwd=cwd, env=git_env(), capture_output=True,
                              text=True)
    except FileNotFoundError:
        raise MissingTool("git is not installed", "apt-get install git") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise InfraError(f"git {args[0]} in {cwd} failed: {detail}")
    return proc


def validate(tree: Path, good: str, bad: str) -> tuple[Path, str, str]:
    """(top of the tree, good commit, bad commit); BisectError for a bad tree or refs. Read-only."""
    tree = tree.expanduser().resolve()
    if not tree.is_dir():
        raise BisectError(f"{tree} does not exist", "pass --tree with the top of a kernel git tree")
    top = _git("rev-parse", "--show-toplevel", cwd=tree, check=False)
    if top.returncode != 0 or not top.stdout.strip():
        raise BisectError(f"{tree} is not a git tree", "bisect needs history: pass a git clone of the kernel")
    tree = Path(top.stdout.strip())
    commits = []
    for name, ref in (("--good", good), ("--bad", bad)):
        proc = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=tree, check=False)
        if proc.returncode != 0:
            raise BisectError(f"unknown ref {ref!r} ({name}) in {tree}",
                              "use a commit id, tag or branch that `git rev-parse` knows there")
        commits.append(proc.stdout.strip())
    g, b = commits
    if g == b:
        raise BisectError(f"--good {good} and --bad {bad} are the same commit {g[:12]}")
    if _git("merge-base", "--is-ancestor", g, b, cwd=tree, check=False).returncode != 0:
        raise BisectError(f"--good {good} ({g[:12]}) is not an ancestor of --bad {bad} ({b[:12]})",
                          "swap them, or pick a good commit on the bad commit's history")
    return tree, g, b


def workspace(tree: Path) -> Path:
    """The private folder of a tree's bisections: src/ (the clone, with its build folder)."""
    key = hashlib.sha256(str(tree).encode()).hexdigest()[:10]
    return cache_dir("bisect", safe_name(f"{tree.name}-{key}"))


def private_clone(tree: Path, dest: Path, start: str) -> Path:
    """A `clone --shared` of tree at dest (reused when it is one), clean and detached at start."""
    origin = _git("config", "--get", "fuse-harness.origin", cwd=dest, check=False).stdout.strip() \
        if (dest / ".git").is_dir() else ""
    if origin != str(tree):
        if dest.exists():
            subprocess.run(["rm", "-rf", str(dest)], check=False)
        log.info("bisect: cloning %s into %s (objects shared, read-only)", tree, dest)
        _git("clone", "--quiet", "--shared", "--no-checkout", str(tree), str(dest), cwd=dest.parent)
        _git("config", "fuse-harness.origin", str(tree), cwd=dest)
    _git("bisect", "reset", "--quiet", cwd=dest, check=False)
    log.info("bisect: checking out %s in %s", start[:12], dest)
    _git("checkout", "--quiet", "--force", "--detach", start, cwd=dest)
    _git("clean", "-fdxq", "-e", f"/{INTREE_PREFIX}*", cwd=dest)  # keep the step build folder
    return dest


def subject(repo: Path, commit: str) -> str:
    return _git("log", "-1", "--format=%s", commit, cwd=repo).stdout.strip()


# -- steps --------------------------------------------------------------------------
@dataclass
class Bisection:
    """Everything one bisection needs; `run()` drives git bisect step by step."""

    tree: Path
    good: str
    bad: str
    test: str
    target: str = config.DEFAULT_TARGET
    profile: str = "default"
    repeat: int = 2
    results: Path = Path("results")
    accel: str | None = None
    steps: list[Step] = field(default_factory=list)

    def check_test(self) -> None:
        """The node must exist: collect it once (no VM) and fail early with its error."""
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               self.test, "--target", self.target], cwd=config.REPO, capture_output=True,
                              text=True)
        if proc.returncode != 0 or "::" not in proc.stdout:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise BisectError(f"test {self.test!r} cannot be collected: {' / '.join(tail)}",
                              "pass a pytest node id relative to the harness checkout, e.g. tests/vm/x.py::test_y")

    def evaluate(self, worktree: Path, build_dir: Path, run_dir: Path, number: int) -> Step:
        """Build the checked-out commit incrementally, then run the test `repeat` times."""
        from harness.kernel import BUILD_DIR_ENV, obtain

        commit = _git("rev-parse", "HEAD", cwd=worktree).stdout.strip()
        start = time.monotonic()
        step = Step(commit, SKIP, 0.0)
        try:
            k = obtain(config.load_target(self.target), self.profile, source_override=f"path:{worktree}",
                       build_dir=build_dir)
            log.info("bisect: step %d: %s built in %s", number, commit[:12], fmt_duration(k.built.seconds))
        except HarnessError as exc:
            step.note = f"build failed: {exc.message.splitlines()[0]}"
            step.seconds = time.monotonic() - start
            return step
        env = dict(os.environ, **{BUILD_DIR_ENV: str(build_dir)})
        if env.get(KEPT_VM_ENV, "1") != "0":  # the first repetition's boot serves the next ones
            env[KEPT_VM_ENV] = "keep"
        for rep in range(1, self.repeat + 1):
            rep_dir = run_dir / "steps" / f"{number:02d}-{commit[:12]}-r{rep}"
            rep_dir.mkdir(parents=True, exist_ok=True)
            argv = pytest_argv(self.test, self.target, self.profile, worktree, rep_dir, self.accel)
            with (rep_dir / "pytest.log").open("w") as out:
                try:
                    subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=config.REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, timeout=REP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    out.write(f"\nfuse-harness bisect: killed after {REP_TIMEOUT:.0f}s\n")
            verdict, folder = _rep_result(rep_dir, self.test)
            step.tests.append(verdict)
            step.runs.append(str(folder or rep_dir))
            log.info("bisect: step %d: %s run %d/%d: %s", number, commit[:12], rep, self.repeat, verdict or "no result")
            if rep_verdict(verdict) == BAD:
                break  # one failure decides the step
        kept.stop_build(build_dir)  # not idling through the next step's build
        step.verdict = classify(step.tests)
        step.seconds = time.monotonic() - start
        return step

    def run(self) -> dict:
        """Bisect; return the bisect.json dict (also written, with reproduce.sh, in a results folder)."""
        from harness.results.meta import Metadata, write_reproducer

        if self.repeat < 1:
            raise BisectError(f"--repeat {self.repeat}: must be at least 1")
        tree, good, bad = validate(self.tree, self.good, self.bad)
        self.check_test()
        ws = workspace(tree)
        with (ws / "lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UserError(f"another bisection of {tree} is running (lock {ws / 'lock'})") from None
            worktree = private_clone(tree, ws / "src", bad)
            # Inside the clone: Kbuild then calls the source `..`, like every cache-owned build,
            # so the first step is a warm ccache build (harness.build.place).
            build_dir = worktree / f"{INTREE_PREFIX}{safe_name(f'bisect-{self.target}-{self.profile}')}"
            run_dir = new_run_dir(self.results, f"bisect-{self.target}")
            meta = Metadata(run_dir, ["fuse-harness", "bisect", "--tree", str(tree), "--good", self.good, "--bad",
                                      self.bad, "--test", self.test, "--repeat", str(self.repeat), "--target",
                                      self.target, "--profile", self.profile])
            meta.update(bisect={"tree": str(tree), "good": good, "bad": bad, "test": self.test,
                                "worktree": str(worktree), "build_dir": str(build_dir)})
            result = {"good": good, "bad": bad, "test": self.test, "first_bad": None, "steps": [],
                      "reproducer": ""}
            started = time.monotonic()
            try:
                result.update(self._loop(worktree, build_dir, run_dir, good, bad, result))
            finally:
                kept.stop_build(build_dir)  # a step interrupted halfway
                (run_dir / "bisect.log").write_text(_git("bisect", "log", cwd=worktree, check=False).stdout)
                _git("bisect", "reset", "--quiet", cwd=worktree, check=False)
                first = (result.get("first_bad") or {}).get("commit")
                result["seconds"] = round(time.monotonic() - started, 1)
                result["reproducer"] = reproducer(tree, self.good, self.bad, self.test, self.repeat, self.target,
                                                  self.profile, worktree, build_dir, first)
                write_json_atomic(run_dir / "bisect.json", result)
                write_reproducer(run_dir, result["reproducer"].splitlines())
                meta.finish("PASS" if first else "FAIL", {"bisect": result["seconds"]})
        result["run_dir"] = str(run_dir)
        return result

    def _loop(self, worktree: Path, build_dir: Path, run_dir: Path, good: str, bad: str, result: dict) -> dict:
        self.check_good_end(worktree, build_dir, run_dir, good, result)
        out = _git("bisect", "start", bad, good, cwd=worktree).stdout
        log.info("bisect: %s", out.strip().splitlines()[-1] if out.strip() else "started")
        number = 0
        while True:
            number += 1
            step = self.evaluate(worktree, build_dir, run_dir, number)
            self.steps.append(step)
            result["steps"] = [s.to_json() for s in self.steps]
            write_json_atomic(run_dir / "bisect.json", result)
            mark = _git("bisect", step.verdict, cwd=worktree, check=False)
            text = mark.stdout + mark.stderr
            left = re.search(r"Bisecting: (\d+) revisions? left", text)
            log.info("bisect: step %d: %s is %s (%s; %s)%s", number, step.commit[:12], step.verdict.upper(),
                     ", ".join(str(t) for t in step.tests) or step.note, fmt_duration(step.seconds),
                     f"; ~{left.group(1)} revisions left" if left else "")
            log.debug("bisect: git said: %s", text.strip())
            first, candidates = parse_bisect_output(text)
            if first:
                return {"first_bad": {"commit": first, "subject": subject(worktree, first)}}
            if candidates or mark.returncode != 0:
                return {"candidates": [{"commit": c, "subject": subject(worktree, c)} for c in candidates],
                        "error": text.strip()[-500:]}


    def check_good_end(self, worktree: Path, build_dir: Path, run_dir: Path, good: str, result: dict) -> None:
        """Step 0: the test must pass at --good, else every commit would look bad (a test of a
        transport the good kernel lacks fails there, it does not skip). Raises BisectError
        naming the good end's verdict and its runs; recorded in bisect.json as `good_end`."""
        _git("checkout", "--quiet", "--force", "--detach", good, cwd=worktree)
        step = self.evaluate(worktree, build_dir, run_dir, 0)
        result["good_end"] = step.to_json()
        log.info("bisect: the good end %s is %s (%s; %s)", good[:12], step.verdict.upper(),
                 ", ".join(str(t) for t in step.tests) or step.note, fmt_duration(step.seconds))
        if step.verdict != GOOD:
            what = ", ".join(str(t) for t in step.tests) or step.note or "no result"
            raise BisectError(
                f"the test does not pass at --good {self.good} ({good[:12]}): {what}, so every commit would "
                "look bad or untestable",
                f"pick a good commit where {self.test} passes (check it with `fuse-harness run --source "
                f"path:TREE -k ...` at that commit), or a test that exists there; runs: "
                f"{', '.join(step.runs) or run_dir}")


def _rep_result(rep_dir: Path, test: str) -> tuple[str | None, Path | None]:
    """The test's verdict in the run folder pytest made under rep_dir (None: no result)."""
    for folder in sorted(rep_dir.glob("[0-9][0-9][0-9]-*")):
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            return None, folder
        return case_verdict(summary, test), folder
    return None, None


# -- CLI ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", required=True, type=Path, help="a kernel git tree (only read; bisected in a clone)")
    p.add_argument("--good", required=True, help="a commit where the test passes")
    p.add_argument("--bad", required=True, help="a later commit where it fails")
    p.add_argument("--test", required=True, help="one pytest node id, e.g. tests/vm/test_x.py::test_y")
    p.add_argument("--repeat", type=int, default=2, help="runs per step: bad if any fails (default 2)")
    p.add_argument("--target", "-t", default=config.DEFAULT_TARGET, help="target whose kconfig fragments to use")
    p.add_argument("--profile", default="default", choices=sorted(config.PROFILES), help="kconfig profile")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--results-dir", default=str(Path.cwd() / "results"))


def run(args: argparse.Namespace) -> int:
    """`fuse-harness bisect`: 0 when a first bad commit was found, 1 otherwise."""
    b = Bisection(args.tree, args.good, args.bad, args.test, args.target, args.profile, args.repeat,
                  Path(args.results_dir).resolve(), args.accel)
    result = b.run()
    for s in result["steps"]:
        print(f"{s['commit'][:12]}  {s['verdict']:4}  {s['seconds']:7.1f}s  {', '.join(map(str, s['tests']))}"
              f"{'  ' + s['note'] if s['note'] else ''}")
    fb = result.get("first_bad")
    if fb:
        print(f"first bad commit: {fb['commit']} {fb['subject']}")
    else:
        print("no single first bad commit; candidates:")
        for c in result.get("candidates", []):
            print(f"  {c['commit']} {c['subject']}")
    print(f"bisect took {fmt_duration(result['seconds'])}; results: {result['run_dir']} "
          "(bisect.json, bisect.log, reproduce.sh, steps/)")
    return 0 if fb else 1
