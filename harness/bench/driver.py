"""Drive the benchmark in a running guest: one `guest serve` per transport and repetition.

Works on anything with `run(cmd, timeout) -> CommandResult` (harness.vm.machine.Vm), so the CLI
and tests/vm/test_bench_smoke.py share it. Transports run interleaved per repetition (rep 1: all
transports, rep 2: all transports, ...) so drift in the shared host hits them all alike.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path
from typing import Any, Protocol

from harness.bench import model
from harness.config import REPO
from harness.errors import MissingTool, VmError
from harness.vm.control import CommandResult

log = logging.getLogger("harness.bench")

PY = "/usr/bin/python3"
BASE = "/tmp/fh-bench"


class Runner(Protocol):
    def run(self, cmd: str, timeout: float | None = None) -> CommandResult: ...


class StepFailed(Exception):
    """One server lifetime could not be measured (the transport's other repetitions still run)."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


def _run(vm: Runner, cmd: str, timeout: float) -> CommandResult:
    result = vm.run(cmd, timeout=timeout)
    if result.lost:
        raise VmError("the guest died or stopped answering during the benchmark",
                      "see the console log in the run folder")
    return result


def probe_guest(vm: Runner) -> dict[str, Any]:
    """fio version, CLK_TCK and the file system type of BASE in the guest."""
    r = _run(vm, f"{model.FIO} --version && getconf CLK_TCK && stat -f -c %T {BASE}", 60)
    lines = r.stdout.split()
    if not r.ok or len(lines) < 3:
        raise MissingTool(f"fio does not run in the guest: {(r.stderr or r.stdout).strip()[-300:]}",
                          "install fio on the host (apt-get install fio); the guest shares its root")
    return {"fio_version": lines[0], "clk_tck": int(lines[1]), "tmp_fs": lines[2]}


def _guest_json(vm: Runner, path: str) -> dict[str, Any]:
    r = _run(vm, f"cat {path}", 30)
    if not r.ok:
        raise StepFailed("read " + path, r.stderr)
    return json.loads(r.stdout)


def _cpu(vm: Runner, pid: int, clk_tck: int) -> float:
    r = _run(vm, f"cat /proc/{pid}/stat", 30)
    if not r.ok:
        raise StepFailed("cpu", f"server pid {pid} is gone: {r.stderr.strip()}")
    return model.parse_cpu(r.stdout, clk_tck)


class ServerRun:
    """One `guest serve` lifetime: start on a fresh tmpfs backing dir, measure, unmount, counters."""

    def __init__(self, vm: Runner, transport: str, rep: int, out_dir: Path, clk_tck: int) -> None:
        self.vm, self.t, self.rep, self.out_dir, self.clk_tck = vm, transport, rep, out_dir, clk_tck
        self.mnt, self.work = f"{BASE}/mnt-{transport}", f"{BASE}/work-{transport}"
        self.pid: int | None = None
        self.ready: dict[str, Any] = {}

    def save(self, name: str, text: str) -> None:
        (self.out_dir / f"{self.rep}-{self.t}-{name}").write_text(text)

    def start(self) -> None:
        serve = (f"cd {shlex.quote(str(REPO))} && exec {PY} -m guest serve --mount {self.mnt} --transport {self.t} "
                 f"--backend passthrough --backing {self.work}/backing --direct-io "
                 f"--ready-file {self.work}/ready --counters {self.work}/counters.json")
        cmd = (f"rm -rf {self.work} && mkdir -p {self.mnt} {self.work}/backing && "
               f"setsid nohup sh -c {shlex.quote(serve)} > {self.work}/serve.log 2>&1 < /dev/null & "
               f"for i in $(seq 240); do test -s {self.work}/ready && exit 0; sleep 0.5; done; exit 1")
        if not _run(self.vm, cmd, 180).ok:
            raise StepFailed("serve", "the server never became ready:\n" + self._serve_log())
        self.ready = _guest_json(self.vm, f"{self.work}/ready")
        self.pid = int(self.ready["pid"])

    def _serve_log(self) -> str:
        return _run(self.vm, f"cat {self.work}/serve.log", 30).stdout[-3000:]

    def cpu(self) -> float:
        assert self.pid is not None
        return _cpu(self.vm, self.pid, self.clk_tck)

    def fio(self, name: str, rw: str, settings: model.BenchSettings) -> float:
        cmd = f"cd {BASE} && " + model.fio_command(self.mnt, rw, settings)
        r = _run(self.vm, cmd, settings.runtime * 4 + 600)
        self.save(f"{name}.fio.json", r.stdout + ("\n# stderr:\n" + r.stderr if r.stderr else ""))
        if not r.ok:
            raise StepFailed(name, f"fio exited {r.rc}: {(r.stderr or r.stdout).strip()[-1500:]}")
        try:
            return float(model.parse_fio(r.stdout)["mib_s"])
        except ValueError as exc:
            raise StepFailed(name, f"unreadable fio output: {exc}") from None

    def meta(self, files: int) -> dict[str, float]:
        cmd = f"{PY} -c {shlex.quote(model.META_SCRIPT)} {self.mnt}/meta {files}"
        r = _run(self.vm, cmd, 600 + files)
        self.save("meta.json", r.stdout + r.stderr)
        if not r.ok:
            raise StepFailed("meta", r.stderr.strip()[-1500:])
        return model.parse_meta(r.stdout)

    def stop(self) -> dict[str, Any]:
        """Unmount, wait for the server to exit, return its final counters."""
        pid = self.pid or 0
        _run(self.vm, f"umount {self.mnt} || umount -l {self.mnt}", 120)
        waited = _run(self.vm, f"for i in $(seq 120); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.5; done; "
                               f"kill -TERM {pid}; sleep 2; kill -KILL {pid} 2>/dev/null; exit 1", 120)
        text = _run(self.vm, f"cat {self.work}/counters.json", 30).stdout
        self.save("counters.json", text)
        self.save("serve.log", self._serve_log())
        _run(self.vm, f"rm -rf {self.work}", 120)
        if not waited.ok:
            raise StepFailed("umount", "the server did not exit after umount (killed)")
        try:
            return json.loads(text)
        except ValueError:
            raise StepFailed("counters", "no counters JSON after the server exited") from None


def save_bench(path: Path, doc: dict[str, Any]) -> None:
    """bench.json, atomically, keeping the run's workload and transport order (no key sorting)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def measure_one(vm: Runner, t: str, rep: int, settings: model.BenchSettings, result: model.BenchResult,
                out_dir: Path, clk_tck: int) -> None:
    """All workloads on one fresh server; samples and the server summary go into result."""
    srv = ServerRun(vm, t, rep, out_dir, clk_tck)
    samples: dict[str, float] = {}
    cpu0 = cpu1 = 0.0
    final: dict[str, Any] | None = None
    try:
        srv.start()
        cpu0 = srv.cpu()
        for name, rw in model.FIO_WORKLOADS:
            samples[name] = srv.fio(name, rw, settings)
            log.info("bench: rep %d %-18s %-14s %9.2f MiB/s", rep, t, name, samples[name])
        meta = srv.meta(settings.meta_files)
        for name, phase in model.META_WORKLOADS:
            samples[name] = meta[phase]
        log.info("bench: rep %d %-18s %-14s %s ops/s", rep, t, "metadata",
                 " ".join(f"{p} {meta[p]:.0f}" for _, p in model.META_WORKLOADS))
        cpu1 = srv.cpu()
    finally:
        if srv.pid is not None:
            final = srv.stop()
        else:  # a server that never got ready exits once its mount is gone
            _run(vm, f"umount {srv.mnt} 2>/dev/null || umount -l {srv.mnt} 2>/dev/null; rm -rf {srv.work}", 120)
    assert final is not None
    summary = model.server_summary(t, rep, srv.ready, final, cpu1 - cpu0)
    if t != "legacy" and summary["transport_used"] != "io_uring":
        raise StepFailed("counters", f"{t} did not serve over io_uring: transport_used="
                         f"{summary['transport_used']}, setup_error={summary['setup_error']}")
    result.servers.append(summary)
    for name, value in samples.items():
        result.add(name, t, value)


def measure(vm: Runner, transports: tuple[str, ...], settings: model.BenchSettings, out_dir: Path,
            accel: str, cpus: int, memory: str) -> model.BenchResult:
    """Every repetition runs every transport once, in order; a failing server is recorded, not fatal."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # the guest's /tmp is an overlay on the 9p root: back the servers with a tmpfs of our own
    mounted = _run(vm, f"mkdir -p {BASE} && mountpoint -q {BASE} || mount -t tmpfs -o size=75% fh-bench {BASE}", 30)
    if not mounted.ok:
        log.warning("bench: no tmpfs on %s (%s); using the guest's /tmp", BASE, mounted.stderr.strip())
    try:
        guest = probe_guest(vm)
        note = model.make_note(settings, accel, cpus, memory, guest["fio_version"], guest["tmp_fs"])
        result = model.BenchResult(settings, transports, note)
        for rep in range(1, settings.repeat + 1):
            for t in transports:
                try:
                    measure_one(vm, t, rep, settings, result, out_dir, guest["clk_tck"])
                except StepFailed as exc:
                    log.warning("bench: rep %d %s failed at %s: %s", rep, t, exc.step, exc.detail.strip()[-300:])
                    result.fail(t, rep, exc.step, exc.detail)
    finally:
        if mounted.ok:
            vm.run(f"umount {BASE} || umount -l {BASE}", timeout=60)
    return result
