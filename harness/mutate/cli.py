"""`fuse-harness mutate`: the suite's power over one scope of kernel code.

    fuse-harness mutate --target T [--series S | --file F [--function NAME]] [--max N] [--seed S]
                        [--time-budget S] [--mutant-timeout S] [--no-baseline] [-k EXPR] [-n N] [--list]

Before the mutants: the unmutated tree is built and the suite run on it once (the clean
baseline, harness.mutate.baseline; cached per tree head and suite): it must pass, its time
bounds each mutant's session and its tests' times order them.

Results: <results>/NNN-mutate-T/mutants.json, report.html (a table of the mutants),
metadata.json, reproduce.sh, baseline/ (the clean session, when run) and mutants/<id>/ (each
mutant's test session, with order.json.order.txt: the order its tests ran in, and why). Exit
0 when no mutant survived, 1 when one did, 4 for bad input, 3 when the tree or the suite does
not run (or fails without a mutant).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import time
from pathlib import Path

from harness import config
from harness.cache import new_run_dir, write_json_atomic
from harness.errors import HarnessError, UserError
from harness.log import fmt_duration
from harness.mutate import ledger as lg
from harness.mutate import scope as sc

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", "-t", default=None, help=f"target name or YAML file (default {config.DEFAULT_TARGET})")
    p.add_argument("--profile", default="default", choices=sorted(config.PROFILES), help="kconfig profile")
    p.add_argument("--source", default=None, help="override the kernel source: path:DIR, tarball:FILE, debian:PKG")
    p.add_argument("--series", default=None,
                   help="mutate the lines this series adds (the default scope of a target with a series)")
    p.add_argument("--file", default=None, help="mutate this file of the tree, e.g. fs/fuse/dev_uring.c")
    p.add_argument("--function", default=None, help="only this function of --file")
    p.add_argument("--max", default="30", help="at most N mutants (default 30)")
    p.add_argument("--seed", default="1", help="the sample's random seed (default 1): same seed, same mutants")
    p.add_argument("--time-budget", default=None,
                   help="seconds from the start (build and baseline included): start no mutant after this")
    p.add_argument("--mutant-timeout", default=None,
                   help="seconds one mutant's test session may take (default: 1.5 x the clean baseline's, at "
                        "least it + 120 s; 900 with --no-baseline); a session cut there is a 'timeout'")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not run the suite on the unmutated tree first (no proof it passes; timeouts then "
                        "do not count as caught)")
    p.add_argument("-k", default=None, help="only tests matching this pytest expression (default: the VM suite)")
    p.add_argument("-n", "--jobs", default="0", help="N guests side by side per mutant (pytest-xdist), or auto")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--results-dir", default=str(Path.cwd() / "results"))
    p.add_argument("--mutant", action="append", default=None, metavar="ID",
                   help="only this mutant id (from --list or mutants.json; repeatable): rerun one")
    p.add_argument("--list", action="store_true", help="list the mutants and stop (no build, no guest)")


def _number(name: str, text: str, kind: type, low: float) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise UserError(f"--{name} {text!r}: not a {'whole ' if kind is int else ''}number") from None
    if value < low:
        raise UserError(f"--{name} {text}: must be at least {low}")
    return value


def check_args(args: argparse.Namespace) -> dict:
    """Every check of the command line that needs no source: UserError (exit 4) naming the
    bad value. Returns the parsed numbers."""
    if args.function and not args.file:
        raise UserError("--function needs --file (the file that defines it)",
                        "e.g. --file fs/fuse/dev_uring.c --function fuse_uring_commit")
    if args.file and args.series:
        raise UserError("--series and --file are two scopes: pass one",
                        "--series S mutates the lines S adds; --file F (on any target) a file of the tree")
    if args.function and not re.fullmatch(r"[A-Za-z_]\w*", args.function):
        raise UserError(f"--function {args.function!r}: not a C function name")
    jobs = args.jobs if args.jobs == "auto" else int(_number("jobs", args.jobs, int, 0))
    return {"max": int(_number("max", args.max, int, 1)), "seed": int(_number("seed", args.seed, int, 0)),
            "budget": None if args.time_budget is None else float(_number("time-budget", args.time_budget, float, 1)),
            "timeout": None if args.mutant_timeout is None else float(_number("mutant-timeout", args.mutant_timeout,
                                                                                float, 10)),
            "jobs": jobs,
            "file": sc.check_file_arg(args.file) if args.file else None}


def run(args: argparse.Namespace) -> int:
    """`fuse-harness mutate`: 0 when no mutant survived, 1 otherwise (see the module docstring)."""
    from harness.kernel import preflight
    from harness.mutate import workspace as ws_mod

    opts = check_args(args)
    target = config.load_target(args.target)
    series_ref = args.series or target.series
    if not opts["file"] and not series_ref:
        raise UserError(f"target {target.name} has no series: say what to mutate",
                        "--file fs/fuse/dev_uring.c [--function NAME], or --series S")
    preflight(target, args.profile, args.source, args.series)
    root = ws_mod.root_of(target, args.profile)
    lock_fd = ws_mod.lock(root)
    try:
        return _scoped(args, opts, target, root, series_ref)
    finally:
        os.close(lock_fd)


def _scoped(args: argparse.Namespace, opts: dict, target: config.Target, root: Path, series_ref: str | None) -> int:
    from harness.mutate import workspace as ws_mod

    ws = ws_mod.prepare(target, args.profile, root, args.source, series_ref)
    if opts["file"]:
        scope = sc.Scope("file", opts["file"], args.function)
    else:
        if ws.series_base is None:
            raise UserError(f"series {series_ref}: no patch of its own applied, so it adds no line to mutate")
        scope = sc.Scope("series", base=ws.series_base, head=ws.head)
    every = sc.candidates(ws.tree, scope)
    mutants = sc.select(every, opts["seed"], None if args.mutant else opts["max"])
    if args.mutant:
        missing = sorted(set(args.mutant) - {m.id for m in mutants})
        if missing:
            raise sc.ScopeError(f"--mutant {missing[0]}: no such mutant in {scope.describe()}",
                                "ids come from `fuse-harness mutate ... --list --max 1000` or mutants.json")
        mutants = [m for m in mutants if m.id in args.mutant]
    log.info("mutate: %d candidate mutants in %s; %d chosen with seed %d", len(every), scope.describe(),
             len(mutants), opts["seed"])
    if args.list:
        for m in mutants:
            print(f"{m.id}  {m.operator:12} {m.file}:{m.line}  {m.function}: {m.original!r} -> {m.replacement!r}")
        return 0
    return _campaign(args, opts, target, ws, scope, mutants, len(every))


def _campaign(args: argparse.Namespace, opts: dict, target: config.Target, ws, scope: sc.Scope,  # noqa: ANN001
              mutants: list, total: int) -> int:
    from harness.mutate.drive import Budget, KernelEvaluator, check_builds, loop
    from harness.report import render_html
    from harness.results.meta import Metadata, write_reproducer

    results = Path(args.results_dir).resolve()
    run_dir = new_run_dir(results, f"mutate-{target.name}")
    argv = command_line(args)
    meta = Metadata(run_dir, argv)
    ledger = lg.Ledger(ws.root / "ledgers", {"target": target.name, "profile": args.profile,
                                             "scope": scope.to_json(), "head": ws.head, "seed": opts["seed"],
                                             "k": args.k})
    evaluator = KernelEvaluator(ws.target_file, args.profile, ws.build_dir, run_dir / "mutants", ledger, args.k,
                                opts["jobs"], args.accel)
    head = {"target": target.name, "profile": args.profile, "scope": {**scope.to_json(), "text": scope.describe()},
            "seed": opts["seed"], "max": opts["max"], "k": args.k, "candidates": total, "tree": str(ws.tree),
            "build_dir": str(ws.build_dir), "head": ws.head, "stopped": "running"}
    meta.update(mutate=head)
    write_reproducer(run_dir, [shlex.join([".venv/bin/fuse-harness", *argv[1:]])])
    state = {"records": []}

    def save(records: list[dict]) -> None:
        state["records"] = records
        write_json_atomic(run_dir / "mutants.json", {**head, "counts": lg.counts(records, head.get("timeouts_count")),
                                                     "mutants": records})

    started = time.monotonic()
    save([])
    try:
        built = check_builds(evaluator)
        log.info("mutate: the unmutated tree builds (%s); %d mutants to go", fmt_duration(built), len(mutants))
        head.update(_bound(args, opts, evaluator, ws, run_dir))
        save([])
        # --time-budget counts from the start: the build and the baseline are part of what it buys
        records, head["stopped"] = loop(ws.tree, mutants, ledger, ws.journal, evaluator,
                                        Budget(opts["budget"], start=started), save)
    except KeyboardInterrupt:
        head["stopped"] = "interrupted"
        raise
    except HarnessError as exc:
        head["stopped"] = f"error: {exc.message}"
        raise
    finally:
        save(state["records"])
        meta.finish("DONE" if head["stopped"] in ("done", "budget") else "INCOMPLETE",
                    {"mutate": round(time.monotonic() - started, 1)})
        render_html(run_dir)
    _print(records, head["stopped"], run_dir, head)
    if head["stopped"] == "errors":
        from harness.errors import InfraError

        raise InfraError(f"the suite did not run for {lg.MAX_ERRORS} mutants in a row (see {run_dir}/mutants/)",
                         "run `fuse-harness run` on this target first: it must pass")
    return 1 if any(r["outcome"] == lg.SURVIVED for r in records) else 0


def _bound(args: argparse.Namespace, opts: dict, evaluator, ws, run_dir: Path) -> dict:  # noqa: ANN001
    """Run (or reuse) the clean baseline, set the evaluator's bound, test times and timeout
    note; mutants.json's baseline fields: {"baseline", "bound", "timeouts_count", "score_rule"}."""
    from harness.mutate import baseline as bl

    base = None
    if not args.no_baseline:
        store = bl.Store(ws.root / "baselines", {
            "target": evaluator.target_file.read_text(), "profile": args.profile, "head": ws.head, "k": args.k,
            "jobs": opts["jobs"], "accel": args.accel, "suite": bl.fingerprint(config.REPO)})
        base = store.load()
        if base is not None:
            log.info("mutate: the clean baseline of %s: the suite passed in %s (%s)", base.measured_at,
                     fmt_duration(base.seconds), base.run)
        else:
            log.info("mutate: the clean baseline: the suite on the unmutated tree (%s/baseline)", run_dir)
            base = evaluator.baseline(run_dir / "baseline")
            store.save(base)
            log.info("mutate: the suite passes on the unmutated tree in %s", fmt_duration(base.seconds))
        evaluator.seconds = dict(base.tests)
    clean = None if base is None else base.seconds
    bound = opts["timeout"] or (bl.DEFAULT_BOUND if clean is None else bl.bound_of(clean))
    counted = bl.timeouts_count(clean, bound)
    if clean is not None and bound < clean:
        log.warning("mutate: --mutant-timeout %.0f is under the clean suite's %.0f s: survivors will time out",
                    bound, clean)
    evaluator.timeout = bound
    evaluator.timeout_note = f"no verdict within {bound:.0f} s: " + (
        f"the clean suite took {clean:.0f} s, so the mutant hung or slowed it (counted as caught)" if counted
        else "not counted as caught (" + ("no clean baseline" if clean is None else f"the clean suite took "
                                          f"{clean:.0f} s") + ")")
    log.info("mutate: each mutant's tests get %s; timeouts %s", fmt_duration(bound),
             "count as caught" if counted else "do not count as caught")
    return {"baseline": None if base is None else {**base.to_json(), "cached": base.cached}, "bound": bound,
            "timeouts_count": counted, "score_rule": bl.score_rule(clean, bound)}


def command_line(args: argparse.Namespace) -> list[str]:
    """The mutate command that repeats this one (for metadata.json and reproduce.sh)."""
    argv = ["fuse-harness", "mutate"]
    for name in ("target", "profile", "source", "series", "file", "function", "max", "seed", "time_budget",
                 "mutant_timeout", "k", "jobs", "accel"):
        value = getattr(args, name, None)
        if value not in (None, "") and not (name == "jobs" and value == "0"):
            argv += [f"-{name}" if name == "k" else f"--{name.replace('_', '-')}", str(value)]
    if getattr(args, "no_baseline", False):
        argv.append("--no-baseline")
    for mutant in getattr(args, "mutant", None) or ():
        argv += ["--mutant", mutant]
    return argv


def _print(records: list[dict], stopped: str, run_dir: Path, head: dict) -> None:
    for r in records:
        by = r.get("caught_by") or ("SURVIVED" if r["outcome"] == lg.SURVIVED else r.get("note") or "")
        print(f"{r['id']}  {r['operator']:12} {r['location']:32} {r['outcome']:9} {r['seconds']:7.1f}s  {by}")
    c = lg.counts(records, head.get("timeouts_count"))
    score = "n/a" if c["score"] is None else f"{100 * c['score']:.0f}%"
    counted = " (counted as caught)" if head.get("timeouts_count") else ""
    print(f"caught {c['caught']}, survived {c['survived']}, timeout {c['timeout']}{counted}, discarded "
          f"{c['discarded']} (does not compile), error {c['error']}; score {score}; stopped: {stopped}")
    base = head.get("baseline")
    if head.get("bound"):
        print(f"bound per mutant: {head['bound']:.0f}s" + (f" (the clean suite: {base['seconds']:.0f}s)" if base
                                                           else " (no clean baseline)"))
    print(f"results: {run_dir} (mutants.json, report.html)")
