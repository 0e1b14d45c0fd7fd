"""The `fuse-harness` command: subcommands map to modules; the only place errors are caught."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from harness import config
from harness import log as hlog
from harness.errors import HarnessError

log = logging.getLogger("harness.cli")


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", "-t", default=None, help=f"target name or YAML file (default {config.DEFAULT_TARGET}; "
                   f"shipped: {', '.join(config.supported())})")
    p.add_argument("--profile", default="default", choices=sorted(config.PROFILES), help="kconfig profile")
    p.add_argument("--source", default=None, help="override the kernel source: path:DIR, tarball:FILE, debian:PKG")
    p.add_argument("--series", default=None,
                   help="apply a patch series: mbox:FILE, dir:FOLDER, git:TREE#A..B, msgid:ID, NAME/REV")


def cmd_targets(args: argparse.Namespace) -> int:
    for name in config.supported():
        t = config.load_target(name)
        print(f"{t.name:8} {t.source:28} promises: {', '.join(t.promises)}")
        if t.description:
            print(f"{'':8} {t.description}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from harness.kernel import obtain_for

    k = obtain_for(args)
    if k.series:
        print(f"series {k.series}: {k.series_identity}")
    if k.abi is not None:
        print(f"ABI: FUSE minor {k.abi.minor}, transports {', '.join(k.abi.transports)}")
    print(f"kernel {k.built.kernel_release}: {k.image}")
    print(f"config: {k.built.config}\nlog: {k.built.log}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from harness.vm.boot import probe_kvm

    accel = probe_kvm()
    print(f"{accel.kind}: {accel.reason}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    """Boot once, run one command, classify how it ended."""
    from harness.cache import new_run_dir
    from harness.kernel import obtain_for
    from harness.vm.boot import choose_accel, vng_command, vng_env
    from harness.vm.console import Outcome, classify

    k = obtain_for(args)
    settings = config.vm_settings(k.profile, accel=args.accel, memory=args.memory, cpus=args.cpus)
    accel = choose_accel(settings.accel)
    run_dir = new_run_dir(Path(args.results_dir), f"boot-{k.target.name}")
    cmd = vng_command(k.image, settings, accel, exec_cmd=args.exec, rwdirs=(run_dir,))
    log.info("boot: %s (%s: %s)", k.built.kernel_release, accel.kind, accel.reason)
    console = run_dir / "console.log"
    start = time.monotonic()
    with console.open("wb") as err, (run_dir / "stdout.log").open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=vng_env(),
                                start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=args.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc, timed_out = None, True
    outcome, why = classify(rc, console.read_text(errors="replace"), timed_out)
    sys.stdout.write((run_dir / "stdout.log").read_text(errors="replace"))
    print(f"outcome: {outcome.value} ({why}) in {time.monotonic() - start:.1f}s; console: {console}")
    return {Outcome.PASSED: 0, Outcome.FAILED: 1}.get(outcome, 1)


def cmd_shell(args: argparse.Namespace) -> int:
    """Boot the guest with SSH and open an interactive shell (or run one command)."""
    from harness.cache import new_run_dir
    from harness.kernel import obtain_for
    from harness.vm.boot import choose_accel
    from harness.vm.control import KEY_PATH
    from harness.vm.machine import Vm

    k = obtain_for(args)
    run_dir = new_run_dir(Path(args.results_dir), f"shell-{k.target.name}")
    settings = config.vm_settings(k.profile, accel=args.accel)
    vm = Vm(k.image, settings, choose_accel(settings.accel), run_dir, rwdirs=(run_dir,))
    vm.start()
    try:
        assert vm.guest is not None
        ssh = ["ssh", "-p", str(vm.guest.port), "-i", str(KEY_PATH), "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1"]
        print(f"I: guest is up; also reachable with: {shlex.join(ssh)}", file=sys.stderr)
        return subprocess.call(ssh + ([args.command] if args.command else []))
    finally:
        vm.stop()


def _cmd_vm(args: argparse.Namespace) -> int:
    from harness.vm import kept_cli

    return kept_cli.cli(args)


def _jobs(text: str) -> int | str:
    """-n/--jobs: a count of guests (0 or more), or "auto" (harness.vm.boot.auto_guests)."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of guests (0, 1, 2, ..., or auto)")
    return int(text)


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: build the target and run the VM suite under pytest, then a summary."""
    import pytest

    from harness.kernel import preflight

    preflight(config.load_target(args.target), args.profile, args.source, args.series)
    argv = ["tests/vm", "-p", "no:cacheprovider", "--results-dir", args.results_dir]
    if args.target:
        argv += ["--target", args.target]
    argv += ["--profile", args.profile]
    if args.source:
        argv += ["--source", args.source]
    if args.series:
        argv += ["--series", args.series]
    if args.accel:
        argv += ["--accel", args.accel]
    if args.k:
        argv += ["-k", args.k]
    if args.jobs:
        argv += ["-n", str(args.jobs)]
    if not args.slow:
        argv += ["-m", "not slow"]
    if args.keep_vm:
        from harness.vm.kept import KEPT_VM_ENV

        os.environ[KEPT_VM_ENV] = "keep"
    os.chdir(config.REPO)
    return int(pytest.main(argv + args.pytest_args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fuse-harness",
        description="Test FUSE over io_uring in a kernel you name: fetch or take the source, apply a patch "
                    "series, build it, boot it under QEMU (virtme-ng) and run the VM test suite, with a "
                    "verdict per test and each test's kernel log checked.",
        epilog="Start with `fuse-harness run` (the suite on the default target, "
               f"{config.DEFAULT_TARGET}). Each subcommand has its own --help; README.md and docs/ "
               "in the checkout have the task-by-task guide.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("targets", help="list the shipped targets").set_defaults(func=cmd_targets)
    sub.add_parser("probe-kvm", help="say whether KVM works here or TCG is used").set_defaults(func=cmd_probe)
    p = sub.add_parser("build", help="fetch the source and build the target's kernel (cached)")
    _target_args(p)
    p.set_defaults(func=cmd_build)
    for name, func, helptext in (("boot", cmd_boot, "boot once and run one command"),
                                 ("shell", cmd_shell, "boot and open an SSH shell in the guest")):
        p = sub.add_parser(name, help=helptext)
        _target_args(p)
        p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
        p.add_argument("--results-dir", default=str(Path.cwd() / "results"))
        if name == "boot":
            p.add_argument("--exec", default="uname -r", help="command to run in the guest")
            p.add_argument("--timeout", type=float, default=300.0, help="wall-clock limit in seconds")
            p.add_argument("--memory", default=None)
            p.add_argument("--cpus", default=None)
        else:
            p.add_argument("command", nargs="?", help="run this instead of an interactive shell")
        p.set_defaults(func=func)
    p = sub.add_parser("vm", help="keep a guest of the target's kernel running for later runs (up|down|status)")
    _target_args(p)
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--results-dir", default=str(Path.cwd() / "results"))
    p.set_defaults(func=_cmd_vm)
    p = sub.add_parser("run", help="main job: build, boot, run the VM test suite, summarize")
    _target_args(p)
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--results-dir", default=str(Path.cwd() / "results"))
    p.add_argument("-k", default=None, help="only tests matching this pytest expression")
    p.add_argument("--slow", action="store_true", help="also run tests marked slow (bisect self-test, bench smoke)")
    p.add_argument("-n", "--jobs", type=_jobs, default=0,
                   help="N guests side by side, one per pytest-xdist worker (one run folder); 0: one guest; "
                        "auto: as many as this host runs side by side (one per CPU and one more under TCG, "
                        "one per guest's vCPU count of CPUs under KVM, as memory allows, at most 8)")
    p.add_argument("--keep-vm", action="store_true",
                   help="leave the guest running for the next run of this kernel build (it adopts it while the "
                        "image is unchanged; a rebuild replaces it); `fuse-harness vm down` stops it")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments after --")
    p.set_defaults(func=cmd_run)

    from harness import report

    p = sub.add_parser("report", help="render report.html, a mailing-list table or a 0-day summary of a run")
    report.add_arguments(p)
    p.set_defaults(func=report.run)

    from harness import bench

    p = sub.add_parser("bench", help="fio + small-file throughput of every transport side by side in one VM")
    _target_args(p)
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)

    from harness import bisect, compare

    p = sub.add_parser("compare", help="run the suite on two targets (or take two run folders) and diff them")
    compare.add_arguments(p)
    p.set_defaults(func=compare.run)
    p = sub.add_parser("bisect", help="git bisect one test over a kernel tree (private clone, incremental builds)")
    bisect.add_arguments(p)
    p.set_defaults(func=bisect.run)
    from harness import mutate

    p = sub.add_parser("mutate", help="mutate the kernel code under test (a series' lines, a file or function) "
                                      "and report which mutants the suite catches")
    mutate.add_arguments(p)
    p.set_defaults(func=mutate.run)

    args = parser.parse_args(argv)
    if getattr(args, "pytest_args", None) and args.pytest_args[0] == "--":
        args.pytest_args = args.pytest_args[1:]
    hlog.setup(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"E: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"E:   hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("E: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
