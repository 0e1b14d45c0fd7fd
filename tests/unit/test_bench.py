"""harness.bench: fio JSON parsing, guest probes, bench.json assembly and the table (no VM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench import model as M
from harness.bench import select_transports
from harness.errors import UserError
from harness.report.data import bench_rows
from harness.report.text import per_cpu_table

FIO_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "fio" / "randread-2jobs.json"


def test_parse_fio_real_sample():
    text = FIO_SAMPLE.read_text()
    raw = json.loads(text)["jobs"][0]["read"]["bw_bytes"]
    got = M.parse_fio(text)
    assert got["direction"] == "read" and got["version"] == "fio-3.33"
    assert got["mib_s"] == pytest.approx(raw / 1048576)
    assert got["iops"] > 0


def test_parse_fio_skips_warnings_and_picks_write_side():
    doc = {"fio version": "fio-3.36", "jobs": [{"error": 0, "read": {"bw_bytes": 0, "iops": 0},
                                                 "write": {"bw_bytes": 3 * 1048576, "iops": 3.0}}]}
    got = M.parse_fio("fio: file hash not empty on exit\n" + json.dumps(doc))
    assert got == {"mib_s": 3.0, "iops": 3.0, "direction": "write", "version": "fio-3.36"}


def test_parse_fio_old_kib_field():
    doc = {"jobs": [{"read": {"bw": 2048, "iops": 2}, "write": {}}]}
    assert M.parse_fio(json.dumps(doc))["mib_s"] == 2.0


@pytest.mark.parametrize("text", ["", "fio: pid=12, err=5/file:io_u.c", '{"jobs": []}',
                                  '{"jobs": [{"read": {"bw_bytes": 0}, "write": {"bw_bytes": 0}}]}',
                                  '{"jobs": [{"error": 5, "read": {"bw_bytes": 10}}]}'])
def test_parse_fio_rejects(text):
    with pytest.raises(ValueError):
        M.parse_fio(text)


def test_fio_command_is_the_scaled_recipe():
    s = M.BenchSettings(size="8M", runtime=2)
    cmd = M.fio_command("/tmp/m", "randwrite", s)
    for part in ("--ioengine=sync", "--bs=1M", "--numjobs=2", "--rw=randwrite", "--size=8M", "--runtime=2",
                 "--time_based", "--group_reporting", "--output-format=json", "--directory=/tmp/m"):
        assert part in cmd.split()
    assert "ramp_time=30" in M.scaling_line(s) and "--size=8M" in M.scaling_line(s)


@pytest.mark.parametrize("kw", [{"size": "64X"}, {"size": "1.5G"}, {"size": "0M"}, {"runtime": 0},
                                {"repeat": 0}, {"meta_files": 0}])
def test_settings_validated(kw):
    ok = {"size": "64M"}
    with pytest.raises(UserError):
        M.BenchSettings(**{**ok, **kw})


def test_parse_meta_and_cpu():
    assert M.parse_meta('noise\n{"files": 100, "create": 0.5, "stat": 0.25, "unlink": 2.0}\n') == {
        "create": 200.0, "stat": 400.0, "unlink": 50.0}
    line = "1234 (python3 -m guest) S 1 1234 1234 0 -1 4194560 900 0 0 0 250 150 0 0 20 0 3 0 77 1 1"
    assert M.parse_cpu(line, 100) == 4.0  # (250 + 150) ticks at 100 Hz; comm may hold spaces


def test_server_summary_counts_only_the_measured_requests():
    ready = {"paths": {"io_uring": 0, "devfuse": 1}}
    final = {"transport_used": "io_uring", "fallback": False, "setup_error": None,
             "paths": {"io_uring": 999, "devfuse": 2}, "per_opcode": {"READ": 500, "WRITE": 400, "INIT": 1},
             "zero_copy": {"read": 0}, "errors": {"cqe_total": 0}}
    s = M.server_summary("bufpool", 2, ready, final, cpu_seconds=0.5)
    assert s["requests"] == 1000 and s["cpu_us_per_request"] == 500.0
    assert s["per_opcode"] == {"READ": 500, "WRITE": 400} and s["rep"] == 2
    assert M.server_summary("legacy", 1, final, final, 1.0)["cpu_us_per_request"] is None


def _result() -> M.BenchResult:
    s = M.BenchSettings(size="8M", runtime=2, repeat=2, transports=("legacy", "bufpool"))
    r = M.BenchResult(s, ("legacy", "bufpool"), M.make_note(s, "tcg", 2, "2G", "fio-3.33", "tmpfs"))
    for rep in (1, 2):
        for t, base in (("bufpool", 20.0), ("legacy", 10.0)):  # out of order on purpose
            for name, _ in M.FIO_WORKLOADS:
                r.add(name, t, base + rep, rep)
            for name, _ in M.META_WORKLOADS:
                r.add(name, t, 10 * base + rep, rep)
            r.servers.append({"transport": t, "rep": rep, "cpu_us_per_request": base * rep})
    return r


def test_bench_json_shape():
    doc = _result().to_json()
    assert "direction, not bare-metal speed" in doc["note"] and "--size=1G --ramp_time=30" in doc["note"]
    names = [n for n, _ in M.FIO_WORKLOADS] + [n for n, _ in M.META_WORKLOADS]
    assert list(doc["workloads"]) == names
    for name, wl in doc["workloads"].items():
        assert wl["unit"] == ("ops/s" if name.startswith("meta-") else "MiB/s") and wl["higher_is_better"] is True
        assert list(wl["transports"]) == ["legacy", "bufpool"]  # the run's transport order
        assert all(len(v) == 2 for v in wl["transports"].values())  # one sample per repetition
    assert doc["cpu_us_per_request"] == {"legacy": 15.0, "bufpool": 30.0}
    assert doc["failures"] == [] and doc["settings"]["repeat"] == 2
    json.dumps(doc)  # serialisable
    rows = bench_rows(doc)  # the report's reader accepts it
    assert {r["transport"] for r in rows} == {"legacy", "bufpool"}


def test_table_medians_spread_and_ratios():
    r = _result()
    r.fail("zero-copy", 1, "serve", "boom\nthe server never became ready")
    text = M.table(r.to_json())
    lines = text.splitlines()
    assert lines[0].split() == ["workload", "transport", "n", "median", "min-max", "unit", "vs", "legacy", "vs",
                                "bufpool"]
    seq = [x.split() for x in lines if x.startswith("seq-read-1M")]
    # paired per round: bufpool/legacy = 21/11 and 22/12 -> median 1.87, range 1.83-1.91
    assert seq[0] == ["seq-read-1M", "legacy", "2", "11.5", "11-12", "MiB/s", "1.00", "(1.00-1.00)", "0.53",
                      "(0.52-0.55)"]
    assert seq[1] == ["seq-read-1M", "bufpool", "2", "21.5", "21-22", "MiB/s", "1.87", "(1.83-1.91)", "1.00",
                      "(1.00-1.00)"]
    assert "server CPU time per request" in text and "legacy 15" in text
    assert "FAILED: zero-copy rep 1 at serve: the server never became ready" in text
    assert "Note:" in text and "not bare-metal speed" in text


def test_select_transports():
    have = ("legacy", "iovec", "bufpool")
    assert select_transports(have, None) == have
    assert select_transports(have, ["bufpool,legacy"]) == ("legacy", "bufpool")
    with pytest.raises(UserError, match="unknown transport"):
        select_transports(have, ["splice"])
    with pytest.raises(UserError, match="does not have transport zero-copy"):
        select_transports(have, ["zero-copy"])


def test_cli_wires_bench(capsys):
    from harness.cli import main

    assert main(["bench", "--size", "64", "--target", "v9.9"]) == 4  # bad input, no build, no VM
    assert "E: " in capsys.readouterr().err


def test_save_bench_keeps_order_and_table_reorders_sorted_json(tmp_path):
    from harness.bench.driver import save_bench

    doc = _result().to_json()
    save_bench(tmp_path / "bench.json", doc)
    back = json.loads((tmp_path / "bench.json").read_text())
    assert list(back["workloads"]["seq-read-1M"]["transports"]) == ["legacy", "bufpool"]
    assert list(back["workloads"])[0] == "seq-write-1M"
    resorted = json.loads(json.dumps(doc, sort_keys=True))  # as a sorting writer would leave it
    assert "legacy 15, bufpool 30" in M.table(resorted)


def test_paired_ratios_cancel_round_drift():
    """A round that is slow for every transport moves the medians, not the paired ratios."""
    samples = {"legacy": [10.0, 5.0, 10.0], "bufpool": [12.0, 6.0, 12.0], "zero-copy": [15.0, 7.5]}
    rounds = {"legacy": [1, 2, 3], "bufpool": [1, 2, 3], "zero-copy": [1, 2]}  # zero-copy lost round 3
    got = M.paired_ratios(samples, rounds)
    assert got["legacy"]["bufpool"] == [1.2, 1.2, 1.2]
    assert got["legacy"]["zero-copy"] == [1.5, 1.5]
    assert got["bufpool"]["legacy"] == pytest.approx([0.8333, 0.8333, 0.8333])
    lower = M.paired_ratios({"legacy": [2.0], "iovec": [4.0]}, {"legacy": [1], "iovec": [1]}, higher_is_better=False)
    assert lower["legacy"]["iovec"] == [0.5]  # twice the latency is half the performance


def test_mailing_list_table_states_ratio_ranges(tmp_path):
    from harness.report.data import Run
    from harness.report.text import bench_table

    r = _result()
    r.add("seq-read-1M", "legacy", 40.0, 3)  # an unpaired sample changes the median, not the ratios
    lines = bench_table(Run(tmp_path, {}, None, bench=r.to_json()))
    assert all(len(x) <= 80 for x in lines), [x for x in lines if len(x) > 80]
    assert "median of the per-round ratios" in "\n".join(lines)
    row = next(x for x in lines if x.startswith("seq-read-1M") and "bufpool" in x)
    assert row.split()[-4:] == ["1.87", "(1.83-1.91)", "1.00", "(1.00-1.00)"], row


def test_per_cpu_ratios_cancel_a_host_that_took_cpu_away():
    """Round 2: steal halves what the VM got while zero-copy ran, and its throughput with it."""
    s = M.BenchSettings(size="8M", runtime=2, repeat=3, transports=("legacy", "bufpool", "zero-copy"))
    r = M.BenchResult(s, s.transports, "note")
    for rnd in (1, 2, 3):
        slow = 0.5 if rnd == 2 else 1.0
        r.add("seq-read-1M", "legacy", 10.0, rnd, {"steal": 0.0, "other": 0.0, "vm": 80.0})
        r.add("seq-read-1M", "bufpool", 11.0, rnd, {"steal": 0.0, "other": 0.0, "vm": 80.0})
        r.add("seq-read-1M", "zero-copy", 15.0 * slow, rnd, {"steal": 40.0 * (1 - slow), "other": 0.0,
                                                             "vm": 80.0 * slow})
    row = next(x for x in bench_rows(r.to_json()) if x["transport"] == "zero-copy")
    assert row["vs"]["legacy"] == 1.5 and row["vs_range"]["legacy"] == (0.75, 1.5)  # throughput sees it
    assert row["cpu_ratios"]["legacy"] == [1.5, 1.5, 1.5] and row["cpu_vs_range"]["legacy"] == (1.5, 1.5)
    text = "\n".join(per_cpu_table(r.to_json()))
    assert "Per host CPU" in text and "1.50 (1.50-1.50)" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert per_cpu_table(_result().to_json()) == []  # no host data: no such table
    assert "Per host CPU" in M.table(r.to_json())


def test_a_spread_of_100_percent_keeps_the_columns():
    from harness.report.text import _spread

    assert _spread(12.4) == " 12%" and _spread(118.0) == " >99" and len(_spread(118.0)) == len(_spread(5))
