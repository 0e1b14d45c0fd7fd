"""`check`: serve a fresh mount, run bounded client cases, verify counters, print KTAP."""

from __future__ import annotations

import argparse
import fnmatch
import os
import random
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable

from guest import ZERO_COPY
from guest import mount as M
from guest.checks import counter_checks, io_cases, meta_cases, pool_cases, stress_cases, zc_cases
from guest.checks.context import Ctx, Skip
from guest.checks.server_proc import ServerProc
from guest.edge import leaks
from guest.ktap import FAIL, PASS, SKIP, Ktap

CASES = [io_cases.smoke, io_cases.io_sizes, io_cases.io_unaligned, io_cases.io_tools, io_cases.io_mmap,
         io_cases.io_direct, meta_cases.dir_tree, meta_cases.rename_unlink,
         meta_cases.xattrs, meta_cases.truncate, meta_cases.statfs,
         stress_cases.per_cpu_clients, stress_cases.fsx, stress_cases.fio,
         pool_cases.pool_starvation]
ZC_CASES = [zc_cases.zero_copy_unprivileged_eperm]
#: The reason of every line after the first failure under --stop-at-first-failure.
STOPPED = "stopped at first failure"


def select(transport: str, only: list[str] | None) -> list:
    """Client cases for a transport, filtered by --only. The zero-copy cases run by default
    on zero-copy (7.3); on kmbuf-zero-copy they are asked for by name, so a finding about
    the posted series stays in its own test (tests/vm/test_edge_kmbuf.py)."""
    extra = ZC_CASES if transport in ZERO_COPY else []
    if only:  # smoke always runs: the counter checks need traffic on the mount
        return [c for c in CASES + extra if c.__name__ in only or c is io_cases.smoke]
    return CASES + (extra if transport == "zero-copy" else [])


def run_case(fn: object, ctx: Ctx, timeout: float) -> tuple[str, str, float]:
    """Run fn(ctx) in a thread; (status, reason, seconds). Status 'timeout' if stuck."""
    result: list = []
    abandoned = threading.Event()  # set on timeout: stay quiet afterwards

    def body() -> None:
        try:
            fn(ctx)  # type: ignore[operator]
            result.append((PASS, ""))
        except Skip as exc:
            result.append((SKIP, str(exc)))
        except AssertionError as exc:
            result.append((FAIL, str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported as # ERROR
            if not abandoned.is_set():
                ctx.diag(traceback.format_exc().rstrip())
            result.append(("error", f"{type(exc).__name__}: {exc}"))

    t0 = time.monotonic()
    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        abandoned.set()
        return "timeout", f"no result after {timeout:.0f}s", time.monotonic() - t0
    return (*result[0], time.monotonic() - t0)


def run_cases(cases: list, ctx: Ctx, k: Ktap, timeout: float, log_tail: Callable[[int], str],
              stop_unless: list[str] | None = None) -> bool:
    """Run the client cases in order, one KTAP line each; True when they stopped early.

    A case that times out aborts the mount: every later case is SKIP "mount aborted after a
    timeout". With `stop_unless` (a list, maybe empty: `--stop-at-first-failure`), the first
    case that fails, errs or times out also stops the run, unless its name matches one of
    those fnmatch patterns (`--known-failing`: the cases a known issue makes fail, which must
    not hide the cases after them); every later case is SKIP "stopped at first failure"."""
    skip_why = ""
    for c in cases:
        name = f"{ctx.transport}.{c.__name__}"
        if skip_why:
            k.result(name, SKIP, skip_why)
            continue
        status, reason, secs = run_case(c, ctx, timeout)
        if status == "timeout":
            k.diag(f"{name}: timed out; aborting the connection; server log: {log_tail(5)}")
            M.teardown(ctx.mnt)
            skip_why = "mount aborted after a timeout"
        elif status == FAIL:
            k.diag(f"{name}: {reason}")
        k.diag(f"{name}: {secs:.2f}s")
        k.result(name, status, reason if status != FAIL else "")
        if (stop_unless is not None and status in (FAIL, "error", "timeout")
                and not any(fnmatch.fnmatchcase(name, p) for p in stop_unless)):
            k.diag(f"{name}: first failure: the remaining cases are not run (--stop-at-first-failure)")
            skip_why = STOPPED
    return skip_why == STOPPED


def server_args(args: argparse.Namespace, backend: str, backing: str | None) -> list[str]:
    """serve options forwarded from check's options."""
    out = ["--backend", backend, "--queue-depth", str(args.queue_depth),
           "--pool-bufs", str(args.pool_bufs), "--max-write", str(args.max_write),
           "--delay-ms", str(args.delay_ms)]
    if backing:
        out += ["--backing", backing]
    if args.max_pages is not None:
        out += ["--max-pages", str(args.max_pages)]
    if args.direct_io:
        out.append("--direct-io")
    return out


def main(args: argparse.Namespace) -> int:
    """Entry point of `python3 -m guest check`; returns the KTAP exit code."""
    t = args.transport
    backend = args.backend or ("passthrough" if t in ZERO_COPY else "memory")
    cases = select(t, args.only)
    checks = counter_checks.CHECKS
    names = [f"{t}.{c.__name__}" for c in cases]
    names += [f"{t}.counters.{c.__name__}" for c in checks] + [f"{t}.server_exit", f"{t}.no_leaks"]
    if args.list:
        print("\n".join(names))
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    before = leaks.snapshot()
    k = Ktap()
    k.header(len(names))
    k.diag(f"transport={t} backend={backend} seed={seed} kernel={os.uname().release}")
    work = tempfile.mkdtemp(prefix="fh-check-", dir="/tmp")
    mnt, scratch = os.path.join(work, "mnt"), os.path.join(work, "scratch")
    backing = os.path.join(work, "backing") if backend == "passthrough" else None
    for d in filter(None, (mnt, scratch, backing)):
        os.mkdir(d)
    srv = ServerProc(work, mnt, t, server_args(args, backend, backing))
    fsx_ops = args.fsx_ops if args.fsx_ops is not None else stress_cases.FSX_OPS * args.scale
    ctx = Ctx(mnt, scratch, t, backend, seed, fsx_ops, k.diag, scale=args.scale, snapshot=srv.snapshot)
    try:
        return _run(args, k, srv, cases, checks, ctx, before)
    finally:
        if M.is_mounted(mnt):
            M.teardown(mnt)
        if M.is_mounted(mnt):  # never recurse into a live (maybe wedged) mount
            k.diag(f"{mnt} is still mounted; leaving {work} in place")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            k.diag(f"kept {work}")


def _run(args: argparse.Namespace, k: Ktap, srv: ServerProc, cases: list, checks: list,
         ctx: Ctx, before: leaks.Snapshot) -> int:
    t = ctx.transport
    try:
        ready = srv.start()
    except RuntimeError as exc:
        k.diag(str(exc))
        cnt = srv.counters() or {}
        err = cnt.get("setup_error") or {}
        # The kernel does not offer the transport: skip. Anything else: error.
        status, why = ((SKIP, err["message"]) if err.get("step") == "INIT"
                       else ("error", "server did not start"))
        if err:
            k.diag(f"setup_error: {err}")
        for name in [f"{t}.{c.__name__}" for c in cases] + \
                [f"{t}.counters.{c.__name__}" for c in checks] + [f"{t}.server_exit", f"{t}.no_leaks"]:
            k.result(name, status, why)
        k.totals()
        return k.exit_code()
    ctx.max_payload = ready["init"].get("max_payload_sz") or ctx.max_payload
    k.diag(f"server ready: uring={ready['uring']} init.minor="
           f"{ready['init'].get('negotiated_minor')} generation={ready['generation']} "
           f"max_payload={ctx.max_payload} scale={ctx.scale}")
    t_cases = time.monotonic()
    stopped = run_cases(cases, ctx, k, args.case_timeout, srv.log_tail,
                        args.known_failing if args.stop_at_first_failure else None)
    elapsed = time.monotonic() - t_cases
    if stopped:  # the verdict is given: abort the mount (the server exits at once), no more lines
        M.teardown(ctx.mnt)
        srv.stop()
        for name in [f"{t}.counters.{c.__name__}" for c in checks] + [f"{t}.server_exit", f"{t}.no_leaks"]:
            k.result(name, SKIP, STOPPED)
        k.totals()
        return k.exit_code()
    rc = srv.stop()
    counters = srv.counters()
    if counters:
        k.diag(f"paths={counters['paths']} per_queue={counters['per_queue']} "
               f"pool={counters['pool']} zero_copy={counters['zero_copy']} "
               f"errors={counters['errors']['cqe']} strict_checked={counters.get('strict', {}).get('checked')} "
               f"in {elapsed:.1f}s "
               f"({sum(counters['paths'].values()) / max(elapsed, 1e-3):.0f} req/s)")
    for c in checks:
        name = f"{t}.counters.{c.__name__}"
        if counters is None:
            k.result(name, "error", "no counters file")
            continue
        try:
            c(counters, t, ctx.facts)
            k.result(name, PASS)
        except Skip as exc:
            k.result(name, SKIP, str(exc))
        except AssertionError as exc:
            k.diag(f"{name}: {exc}")
            k.result(name, FAIL)
    if rc != 0:
        k.diag(f"server exit code {rc}; log: {srv.log_tail()}")
    k.result(f"{t}.server_exit", PASS if rc == 0 else FAIL)
    if M.is_mounted(ctx.mnt):
        M.teardown(ctx.mnt)
    missing = leaks.check(before)
    k.diag(f"{t}.no_leaks: after the server exited: "
           + ("; ".join(missing) or "no FUSE connection left, pinned pages back"))
    k.result(f"{t}.no_leaks", FAIL if missing else PASS)
    k.totals()
    return k.exit_code()
