"""The benchmark's plumbing works end to end on a tiny scale (no timing thresholds: never pass/fail on speed).

Runs harness.bench.driver on the session guest: 2 transports mounted at once, 1 round, 8 MiB
files, 2 s per fio workload. Checks bench.json's shape, that every sample is positive, and that the io_uring
transport really served fio's reads and writes over the ring rather than /dev/fuse.
"""

from __future__ import annotations

import json

import pytest

from harness.bench import model
from harness.bench.driver import measure, save_bench


@pytest.mark.slow
def test_bench_smoke(vm, kernel, run_dir):
    available = tuple(getattr(kernel.abi, "transports", ())) if kernel.abi is not None else kernel.promises()
    uring = next((t for t in ("bufpool", "iovec") if t in available), None)
    if "legacy" not in available or uring is None:
        pytest.skip(f"needs legacy and an io_uring transport; the kernel has {', '.join(available)}")
    transports = ("legacy", uring)
    settings = model.BenchSettings(size="8M", runtime=2, repeat=1, meta_files=50, transports=transports)
    out = run_dir / "bench-smoke"
    result = measure(vm, transports, settings, out, vm.accel.kind, vm.settings.cpus, vm.settings.memory,
                     host=vm.host_load)
    doc = result.to_json()
    save_bench(out / "bench.json", doc)

    assert doc["failures"] == [], json.dumps(doc["failures"], indent=1)
    assert "not bare-metal speed" in doc["note"] or vm.accel.kind != "tcg"
    names = [n for n, _ in model.FIO_WORKLOADS] + [n for n, _ in model.META_WORKLOADS]
    assert list(doc["workloads"]) == names
    for name, wl in doc["workloads"].items():
        assert wl["unit"] in ("MiB/s", "ops/s") and wl["higher_is_better"] is True
        assert list(wl["transports"]) == list(transports), name
        for t, samples in wl["transports"].items():
            assert len(samples) == 1 and all(x > 0 for x in samples), (name, t, samples)
            assert wl["rounds"][t] == [1], (name, t, wl["rounds"])
        paired = wl["paired"]["legacy"][uring]
        assert len(paired) == 1 and paired[0] > 0, (name, wl["paired"])
    host = doc["host"]  # the host's load was read around every sample, QEMU's CPU counted as the VM's
    assert host and host["samples"] == (len(model.FIO_WORKLOADS) + 1) * len(transports), host
    assert host["vm"]["max"] > 0, host
    assert set(doc["cpu_us_per_request"]) == set(transports)
    assert all(v > 0 for v in doc["cpu_us_per_request"].values()), doc["cpu_us_per_request"]
    table = model.table(doc)
    assert "vs legacy" in table and "seq-read-1M" in table

    servers = {s["transport"]: s for s in doc["servers"]}
    legacy, ring = servers["legacy"], servers[uring]
    assert legacy["transport_used"] == "devfuse" and legacy["paths"]["io_uring"] == 0
    assert ring["transport_used"] == "io_uring" and not ring["fallback"] and ring["setup_error"] is None
    assert ring["errors_cqe_total"] == 0
    # fio's I/O (FOPEN_DIRECT_IO: every read/write reaches the server) went over the ring
    assert ring["per_opcode"]["READ"] > 0 and ring["per_opcode"]["WRITE"] > 0, ring["per_opcode"]
    data_ops = ring["per_opcode"]["READ"] + ring["per_opcode"]["WRITE"]
    assert ring["paths"]["io_uring"] >= data_ops > ring["paths"]["devfuse"], ring
