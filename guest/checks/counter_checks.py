"""Cases on the server's counters after unmount: did the transport really serve?"""

from __future__ import annotations

from guest import ZERO_COPY
from guest.checks.context import Skip, expect

RING = ("iovec", "bufpool", "bufpool-registered", "zero-copy", "bufring", "kmbuf", "kmbuf-zero-copy")
GEN_C = ("bufpool", "bufpool-registered", "zero-copy")
KMBUF = ("kmbuf", "kmbuf-zero-copy")


def path_used(c: dict, transport: str, facts: dict) -> None:
    """Non-legacy: requests went over io_uring (no fallback); legacy: none did."""
    p = c["paths"]
    if transport in RING:
        expect(c["setup_error"] is None, f"setup error: {c['setup_error']}")
        expect(not c["fallback"], "server fell back to /dev/fuse")
        expect(c["transport_used"] == "io_uring", f"transport_used {c['transport_used']}")
        expect(p["io_uring"] > 0, f"paths {p}")
        served = p["io_uring"] / max(1, p["io_uring"] + p["devfuse"])
        expect(served > 0.8, f"only {served:.0%} of requests over io_uring: {p}")
    else:
        expect(p["io_uring"] == 0 and c["transport_used"] == "devfuse", f"paths {p}")


def init_negotiated(c: dict, transport: str, facts: dict) -> None:
    """Negotiated minor = min(kernel, 46); io_uring flag echoed iff ring transport."""
    i = c["init"]
    expect(i["negotiated_minor"] == min(i["kernel_minor"], 46), f"init {i}")
    expect(i["over_io_uring"] == (transport in RING), f"over_io_uring {i['over_io_uring']}")
    if transport in GEN_C:
        expect(i["offered"]["has_bufpool"], "kernel did not offer HAS_IO_URING_BUFPOOL")


def no_errors(c: dict, transport: str, facts: dict) -> None:
    """No CQE errors (teardown ENOTCONN aside), no malformed requests."""
    e = c["errors"]
    expect(e["cqe_total"] == 0, f"CQE errors {e['cqe']}")
    expect(e["malformed"] == 0, f"{e['malformed']} malformed requests")
    expect(e.get("exceptions", 0) == 0, f"{e.get('exceptions')} server exceptions (see log)")
    expect(set(e["teardown_cqe"]) <= {"ENOTCONN", "ECONNABORTED"},
           f"teardown {e['teardown_cqe']}")


def queues_used(c: dict, transport: str, facts: dict) -> None:
    """Every CPU that ran a pinned client has requests on its own queue."""
    if transport not in RING:
        raise Skip("no queues on /dev/fuse")
    cpus = facts.get("client_cpus")
    if not cpus:
        raise Skip("per_cpu_clients did not run")
    pq = c["per_queue"]
    missing = [cpu for cpu in cpus if pq.get(str(cpu), 0) == 0]
    expect(not missing, f"queues without requests: {missing}; per_queue {pq}")
    expect(len(pq) <= c["uring"]["nr_queues"], f"per_queue {pq}")


def pool_usage(c: dict, transport: str, facts: dict) -> None:
    """Bufpool: buffers were taken, never more at once than the pool has."""
    if transport in ("legacy", "iovec"):
        raise Skip("no buffer pool")
    pool, u = c["pool"], c["uring"]
    expect(pool["high_water"] >= 1, f"pool {pool}")
    if transport == "bufring":  # buffer ids come from ent_in_out.buf_id (generation B)
        b = c["bufring"]
        expect(c["generation"] == "B", f"generation {c['generation']}, not B")
        expect(b["payload"] >= 1, f"no payload request in a bufring buffer: not exercised; bufring {b}")
        expect(b["shared"] == 0 and b["unexpected"] == 0 and b["bad_id"] == 0, f"bufring {b}")
        expect(all(i < u["pool_bufs"] for ids in b["ids"].values() for i in ids), f"bufring {b}")
    if transport in KMBUF:  # buffer ids come from IORING_CQE_F_BUFFER, never made up
        k = c["kmbuf"]
        expect(k["selected"] >= 1 and k["missing"] == 0 and k["unexpected"] == 0, f"kmbuf {k}")
        expect(all(b < u["pool_bufs"] for ids in k["ids"].values() for b in ids), f"kmbuf {k}")
    expect(pool["high_water"] <= u["pool_bufs"], f"high water {pool['high_water']} > "
           f"pool_bufs {u['pool_bufs']}")
    expect(pool["distinct_offsets"] <= u["pool_bufs"] * u["nr_queues"], f"pool {pool}")


def zero_copy_used(c: dict, transport: str, facts: dict) -> None:
    """zero-copy: reads and writes went through READ_FIXED/WRITE_FIXED."""
    if transport not in ZERO_COPY:
        raise Skip("not the zero-copy transport")
    z = c["zero_copy"]
    expect(z["read"] > 0 and z["write"] > 0, f"zero_copy {z}")
    expect(z["fixed_errors"] == 0, f"zero_copy {z}")


def strict_server(c: dict, transport: str, facts: dict) -> None:
    """Every ring request had every field the kernel wrote as the request implies
    (guest/transports/strict.py); the first mismatch comes with its request dumped."""
    if transport not in RING:
        raise Skip("no ring: /dev/fuse requests carry no ring fields")
    s = c.get("strict") or {}
    expect(s.get("checked", 0) > 0, f"not exercised: no ring request was checked; strict {s}")
    expect(s["violations"] == 0, f"{s['violations']} mismatch(es) in {s['checked']} ring requests "
           f"{s['kinds']}; first: {s['first']}")


CHECKS = [path_used, init_negotiated, no_errors, queues_used, pool_usage, zero_copy_used, strict_server]
