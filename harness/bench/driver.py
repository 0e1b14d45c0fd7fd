"""Drive the benchmark in a running guest: one `guest serve` per transport, measured in rounds.

Works on anything with `run(cmd, timeout) -> CommandResult` (harness.vm.machine.Vm), so the CLI
and tests/vm/test_bench_smoke.py share it. Every transport's server is mounted at once; a round
runs each workload on every transport back to back (the order rotated per round), so host noise
that outlasts one workload hits all transports of that round alike and cancels out of the paired
ratios (harness.bench.model.paired_ratios).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from harness.bench import hostload, model
from harness.config import REPO
from harness.errors import MissingTool, VmError
from harness.vm.control import CommandResult

log = logging.getLogger("harness.bench")

PY = "/usr/bin/python3"
BASE = "/tmp/fh-bench"


class Runner(Protocol):
    def run(self, cmd: str, timeout: float | None = None) -> CommandResult: ...


#: Reads the host's CPU counters now (hostload.snapshot bound to the VM's process group).
HostProbe = Callable[[], "hostload.Snapshot | None"]


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
    """One `guest serve` for the whole run: start on a fresh tmpfs backing dir, measure, unmount, counters."""

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


def rotation(transports: tuple[str, ...], rnd: int) -> list[str]:
    """The order of round rnd (1-based): rotated by one per round, so no transport always goes first."""
    k = (rnd - 1) % len(transports) if transports else 0
    return list(transports[k:] + transports[:k])


class Rounds:
    """Every transport's server mounted at once; rounds run each workload on all of them back to back."""

    def __init__(self, vm: Runner, transports: tuple[str, ...], settings: model.BenchSettings,
                 result: model.BenchResult, out_dir: Path, clk_tck: int, host: HostProbe | None = None) -> None:
        self.vm, self.settings, self.result, self.host = vm, settings, result, host
        self.servers = {t: ServerRun(vm, t, 0, out_dir, clk_tck) for t in transports}
        self.live: list[str] = []
        self.cpu0: dict[str, float] = {}

    def start(self) -> None:
        for t, srv in self.servers.items():
            try:
                srv.start()
                self.cpu0[t] = srv.cpu()
                self.live.append(t)
                log.info("bench: %s server ready (pid %s) on %s", t, srv.pid, srv.mnt)
            except StepFailed as exc:
                self._failed(t, 0, exc)

    def _failed(self, t: str, rnd: int, exc: StepFailed) -> None:
        log.warning("bench: round %d %s failed at %s: %s", rnd, t, exc.step, exc.detail.strip()[-300:])
        self.result.fail(t, rnd, exc.step, exc.detail)
        srv = self.servers[t]
        if t in self.live and srv.pid is not None and not _run(self.vm, f"kill -0 {srv.pid}", 30).ok:
            self.live.remove(t)  # its server is gone: the later rounds go on without it
            log.warning("bench: %s server exited; measuring the others only", t)

    def _step(self, t: str, rnd: int, fn: Callable[[ServerRun], Any]) -> tuple[Any, dict[str, float] | None]:
        """fn(server of t) in round rnd, and the host's load meanwhile; None when it failed (recorded)."""
        srv = self.servers[t]
        srv.rep = rnd  # names the files it saves
        before = self.host() if self.host else None
        try:
            value = fn(srv)
        except StepFailed as exc:
            self._failed(t, rnd, exc)
            return None, None
        load = hostload.window(before, self.host() if self.host else None)
        if hostload.disturbed(load):
            log.info("bench: round %d %s: host busy elsewhere meanwhile (steal %s%%, other processes %s%%)",
                     rnd, t, load["steal"], load["other"])  # type: ignore[index]
        return value, load

    def round(self, rnd: int) -> None:
        order = rotation(tuple(self.servers), rnd)
        for name, rw in model.FIO_WORKLOADS:
            for t in (t for t in order if t in self.live):
                value, load = self._step(t, rnd, lambda srv, name=name, rw=rw: srv.fio(name, rw, self.settings))
                if value is not None:
                    self.result.add(name, t, value, rnd, load)
                    log.info("bench: round %d %-18s %-14s %9.2f MiB/s", rnd, t, name, value)
        for t in (t for t in order if t in self.live):
            meta, load = self._step(t, rnd, lambda srv: srv.meta(self.settings.meta_files))
            if meta is not None:
                for name, phase in model.META_WORKLOADS:
                    self.result.add(name, t, meta[phase], rnd, load)
                log.info("bench: round %d %-18s %-14s %s ops/s", rnd, t, "metadata",
                         " ".join(f"{p} {meta[p]:.0f}" for _, p in model.META_WORKLOADS))

    def stop(self) -> None:
        """CPU time, unmount and final counters of every server that started."""
        for t, srv in self.servers.items():
            if srv.pid is None:
                _run(self.vm, f"umount {srv.mnt} 2>/dev/null || umount -l {srv.mnt} 2>/dev/null; rm -rf {srv.work}",
                     120)
                continue
            srv.rep = 0
            try:
                cpu = srv.cpu() - self.cpu0[t] if t in self.live else 0.0
                final = srv.stop()
            except StepFailed as exc:
                self._failed(t, 0, exc)
                continue
            if t not in self.live:  # died mid-run: no CPU figure for a partial run
                continue
            summary = model.server_summary(t, 0, srv.ready, final, cpu)
            if t != "legacy" and summary["transport_used"] != "io_uring":
                self._failed(t, 0, StepFailed("counters", f"{t} did not serve over io_uring: transport_used="
                                              f"{summary['transport_used']}, setup_error={summary['setup_error']}"))
                continue
            self.result.servers.append(summary)


def measure(vm: Runner, transports: tuple[str, ...], settings: model.BenchSettings, out_dir: Path,
            accel: str, cpus: int, memory: str, host: HostProbe | None = None) -> model.BenchResult:
    """Mount every transport at once, run settings.repeat rounds; a failing server is recorded, not fatal.

    host, when given, reads the host's CPU counters (hostload.snapshot for the VM's process group)
    before and after every sample, so bench.json says how steady the host was.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # the guest's /tmp is an overlay on the 9p root: back the servers with a tmpfs of our own
    mounted = _run(vm, f"mkdir -p {BASE} && mountpoint -q {BASE} || mount -t tmpfs -o size=75% fh-bench {BASE}", 30)
    if not mounted.ok:
        log.warning("bench: no tmpfs on %s (%s); using the guest's /tmp", BASE, mounted.stderr.strip())
    try:
        guest = probe_guest(vm)
        note = model.make_note(settings, accel, cpus, memory, guest["fio_version"], guest["tmp_fs"])
        result = model.BenchResult(settings, transports, note)
        rounds = Rounds(vm, transports, settings, result, out_dir, guest["clk_tck"], host)
        try:
            rounds.start()
            for rnd in range(1, settings.repeat + 1):
                if rounds.live:
                    rounds.round(rnd)
        finally:
            rounds.stop()
    finally:
        if mounted.ok:
            vm.run(f"umount {BASE} || umount -l {BASE}", timeout=60)
    return result
