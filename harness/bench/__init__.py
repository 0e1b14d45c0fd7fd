"""`fuse-harness bench`: fio and small-file throughput of every transport, side by side, in one VM.

    fuse-harness bench [--target v7.3] [--repeat 5] [--size 64M] [--runtime 10] [--transports T ...]

One boot; every transport the kernel's ABI has gets its own `guest serve` (passthrough backend on
a guest tmpfs, FOPEN_DIRECT_IO), all mounted at once. Each round runs fio (write, randwrite, read,
randread; the series' recipe scaled to TCG) and a create/stat/unlink loop on every transport back
to back; relative performance is the median of the per-round ratios. Writes bench.json,
metadata.json and report.html into a new run folder, prints a table. Never a pass/fail on timing:
exit 0 when every server was measured, 1 when one could not be (see bench.json "failures").
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

from harness.bench.model import BenchSettings, scaling_line, table
from harness.errors import UserError

__all__ = ["BenchSettings", "add_arguments", "run", "select_transports", "table"]

log = logging.getLogger("harness.bench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=5,
                   help="rounds; each runs every workload on every transport once (default 5)")
    p.add_argument("--size", default="64M", help="fio --size per job (default 64M; the series used 1G)")
    p.add_argument("--runtime", type=int, default=10, help="fio --runtime seconds per workload (default 10)")
    p.add_argument("--ramp", type=int, default=2, help="fio --ramp_time seconds before each measurement (default 2)")
    p.add_argument("--meta-files", type=int, default=200, help="files in the create/stat/unlink loop (default 200)")
    p.add_argument("--transports", nargs="+", default=None, metavar="T",
                   help="only these transports (default: all the kernel's ABI has)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None)
    p.add_argument("--results-dir", default=str(Path.cwd() / "results"))


def select_transports(available: tuple[str, ...], requested: list[str] | None) -> tuple[str, ...]:
    """The transports to measure, in the canonical order; UserError for unknown or absent ones."""
    from harness.config import TRANSPORTS

    if not requested:
        return tuple(t for t in TRANSPORTS if t in available)
    names = [n for item in requested for n in item.split(",") if n]
    for n in names:
        if n not in TRANSPORTS:
            raise UserError(f"unknown transport {n!r}", f"choose from {', '.join(TRANSPORTS)}")
        if n not in available:
            raise UserError(f"the kernel does not have transport {n}",
                            f"its ABI has: {', '.join(available) or 'none'}")
    return tuple(t for t in TRANSPORTS if t in names)


def run(args: argparse.Namespace) -> int:
    """Build (cached), boot once, measure, write bench.json + report.html + report.txt, print the table."""
    from harness import config
    from harness.bench.driver import measure, save_bench
    from harness.cache import new_run_dir
    from harness.kernel import obtain
    from harness.log import Phases
    from harness.report import render_html, render_text
    from harness.results.meta import Metadata, write_reproducer
    from harness.vm.boot import choose_accel
    from harness.vm.machine import Vm

    settings = BenchSettings(size=args.size, runtime=args.runtime, repeat=args.repeat, meta_files=args.meta_files,
                             ramp=args.ramp)
    phases = Phases()
    k = obtain(config.load_target(args.target), args.profile, phases, source_override=args.source,
               series_override=args.series)
    available = tuple(getattr(k.abi, "transports", ())) if k.abi is not None else k.promises()
    transports = select_transports(available, args.transports)
    settings = dataclasses.replace(settings, transports=transports)
    run_dir = new_run_dir(Path(args.results_dir), f"bench-{k.target.name}")
    meta = Metadata(run_dir, ["fuse-harness", *sys.argv[1:]])
    meta.update(kernel=k.describe(), bench={"transports": list(transports), "size": settings.size,
                                            "runtime": settings.runtime, "ramp": settings.ramp,
                                            "repeat": settings.repeat})
    (run_dir / "kernel.config").write_text(k.built.config.read_text())
    vm_settings = config.vm_settings(k.profile, accel=args.accel)
    accel = choose_accel(vm_settings.accel)
    vm = Vm(k.image, vm_settings, accel, run_dir, rwdirs=(run_dir,))
    status = "ERROR"
    log.info("bench: %s; %s", scaling_line(settings), "TCG: numbers show direction, not bare-metal speed"
             if accel.kind == "tcg" else accel.kind)
    try:
        with phases.measure("boot"):
            vm.start()
        meta.update(vm={"accel": accel.kind, "accel_reason": accel.reason, "command": vm.command,
                        "boot_seconds": round(vm.boot_seconds, 1), "cpus": vm_settings.cpus,
                        "memory": vm_settings.memory})
        write_reproducer(run_dir, [".venv/bin/fuse-harness " + shlex.join(sys.argv[1:])])
        with phases.measure("bench"):
            result = measure(vm, transports, settings, run_dir / "bench", accel.kind, vm_settings.cpus,
                             vm_settings.memory, host=vm.host_load)
        bench = result.to_json()
        save_bench(run_dir / "bench.json", bench)
        status = "FAIL" if result.failures else "PASS"
    finally:
        vm.stop()
        meta.finish(status, phases.durations)
    print(f"bench: {k.built.kernel_release}, transports {', '.join(transports)}; run folder {run_dir}\n")
    sys.stdout.write(table(bench))
    (run_dir / "report.txt").write_text(render_text(run_dir))  # the mailing-list form
    print(f"\nreport: {render_html(run_dir)} (and report.txt)")
    return 1 if result.failures else 0
