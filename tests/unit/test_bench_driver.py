"""harness.bench.driver's schedule on a scripted guest: all servers at once, rotated rounds,
paired samples, a server that dies mid-run (no VM: the guest's answers are simulated)."""

from __future__ import annotations

import json
import re

from harness.bench import model as M
from harness.bench.driver import measure, rotation
from harness.vm.control import CommandResult

SPEED = {"legacy": 10.0, "bufpool": 12.0, "zero-copy": 15.0}


class ScriptedGuest:
    """Answers the driver's commands; round 2 is a slow host (everything at half speed)."""

    def __init__(self, die: str | None = None, die_at: int = 0) -> None:
        self.fio_calls: list[str] = []
        self.die, self.die_at = die, die_at
        self.pids = {t: 100 + i for i, t in enumerate(SPEED)}
        self.dead: set[int] = set()

    def run(self, cmd: str, timeout: float | None = None) -> CommandResult:
        def ok(out: str = "", rc: int = 0) -> CommandResult:
            return CommandResult(cmd, rc, out, "" if rc == 0 else "boom", 0.1)

        if "--version" in cmd:
            return ok("fio-3.33\n100\ntmpfs\n")
        if m := re.search(r"cat /tmp/fh-bench/work-([\w-]+)/ready", cmd):
            return ok(json.dumps({"pid": self.pids[m.group(1)], "paths": {"io_uring": 0, "devfuse": 1}}))
        if m := re.search(r"cat /proc/(\d+)/stat", cmd):
            alive = int(m.group(1)) not in self.dead
            return ok("1 (python3) S 1 1 1 0 -1 0 0 0 0 0 50 50 0 0") if alive else ok(rc=1)
        if m := re.search(r"kill -0 (\d+)$", cmd):
            return ok(rc=1 if int(m.group(1)) in self.dead else 0)
        if m := re.search(r"--directory=/tmp/fh-bench/mnt-([\w-]+)", cmd):
            t = m.group(1)
            self.fio_calls.append(t)
            rnd = (len(self.fio_calls) - 1) // (4 * len(SPEED)) + 1
            if t == self.die and len(self.fio_calls) >= self.die_at:
                self.dead.add(self.pids[t])
                return ok("fio: io_u error: Transport endpoint is not connected", rc=1)
            bw = SPEED[t] * (0.5 if rnd == 2 else 1.0) * 1048576
            return ok(json.dumps({"fio version": "fio-3.33", "jobs": [{"error": 0, "write": {"bw_bytes": bw},
                                                                      "read": {"bw_bytes": bw}}]}))
        if "counters.json" in cmd and cmd.startswith("cat"):
            t = re.search(r"work-([\w-]+)", cmd).group(1)
            used = "devfuse" if t == "legacy" else "io_uring"
            return ok(json.dumps({"transport_used": used, "paths": {used: 1001}, "per_opcode": {"READ": 500}}))
        if "-c " in cmd and "/meta " in cmd:
            return ok(json.dumps({"files": 10, "create": 0.1, "stat": 0.05, "unlink": 0.1}))
        if m := re.search(r"for i in \$\(seq 120\); do kill -0 (\d+)", cmd):
            return ok()
        return ok()


def test_rotation():
    ts = ("legacy", "bufpool", "zero-copy")
    assert [rotation(ts, r) for r in (1, 2, 3, 4)] == [list(ts), ["bufpool", "zero-copy", "legacy"],
                                                      ["zero-copy", "legacy", "bufpool"], list(ts)]


def test_rounds_pair_samples_and_cancel_a_slow_round(tmp_path):
    guest = ScriptedGuest()
    s = M.BenchSettings(size="8M", runtime=2, repeat=3, meta_files=10, transports=tuple(SPEED))
    doc = measure(guest, s.transports, s, tmp_path, "tcg", 2, "2G").to_json()
    assert doc["failures"] == []
    assert guest.fio_calls[:3] == ["legacy", "bufpool", "zero-copy"]  # round 1, first workload
    assert guest.fio_calls[12:15] == ["bufpool", "zero-copy", "legacy"]  # round 2 starts one later
    wl = doc["workloads"]["rand-read-1M"]
    assert wl["transports"]["zero-copy"] == [15.0, 7.5, 15.0]  # round 2 ran at half speed...
    assert wl["paired"]["legacy"]["zero-copy"] == [1.5, 1.5, 1.5]  # ...which the ratios do not see
    assert wl["rounds"]["legacy"] == [1, 2, 3]
    assert {x["transport"] for x in doc["servers"]} == set(SPEED)
    assert (tmp_path / "2-bufpool-seq-read-1M.fio.json").is_file()


def test_a_server_that_dies_is_dropped_and_reported(tmp_path):
    guest = ScriptedGuest(die="bufpool", die_at=22)  # the 22nd fio run: round 2's rand-read on bufpool
    s = M.BenchSettings(size="8M", runtime=2, repeat=3, meta_files=10, transports=tuple(SPEED))
    doc = measure(guest, s.transports, s, tmp_path, "tcg", 2, "2G").to_json()
    assert guest.fio_calls.count("bufpool") == 8  # 4 per round in rounds 1 and 2, none in round 3
    assert [(f["transport"], f["rep"], f["step"]) for f in doc["failures"]][:1] == [("bufpool", 2, "rand-read-1M")]
    assert len(doc["workloads"]["seq-write-1M"]["transports"]["legacy"]) == 3  # the others go on
    assert "bufpool" not in {x["transport"] for x in doc["servers"]}


class HostProbe:
    """Host counters advancing 1000 ticks per read; another process takes half the host in round 2."""

    def __init__(self, guest: ScriptedGuest) -> None:
        self.guest, self.snap = guest, M.hostload.Snapshot(0, 0, 0, 0)

    def __call__(self) -> M.hostload.Snapshot:
        rnd = len(self.guest.fio_calls) // (4 * len(SPEED)) + 1
        other = 500 if rnd == 2 else 10
        s = self.snap
        self.snap = M.hostload.Snapshot(s.total + 1000, s.busy + 950, s.steal, s.ours + 950 - other)
        return self.snap


def test_host_load_is_read_around_every_sample(tmp_path):
    guest = ScriptedGuest()
    s = M.BenchSettings(size="8M", runtime=2, repeat=3, meta_files=10, transports=tuple(SPEED))
    doc = measure(guest, s.transports, s, tmp_path, "tcg", 2, "2G", host=HostProbe(guest)).to_json()
    loads = doc["workloads"]["seq-write-1M"]["host"]["legacy"]
    assert [w["other"] for w in loads] == [1.0, 50.0, 1.0]  # round 2 shared the host
    host = doc["host"]
    assert host["samples"] == 3 * 5 * len(SPEED) and host["verdict"] == "noisy"
    assert M.table(doc).count("Host load: NOISY") == 1
