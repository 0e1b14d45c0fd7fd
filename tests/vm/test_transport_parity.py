"""Transport parity: one seeded call sequence over legacy /dev/fuse and over each promised
ring transport must give the same results (guest/edge/parity.py, guest/parity/).

The default runs the fixed seeds (about 20-30 s per transport under TCG); `--parity-seeds N`
(or FUSE_HARNESS_PARITY_SEEDS=N) runs N seeds, `a,b` exactly those. A divergence fails with
its seed, the first diverging call and a shrunk, replayable sequence.
"""

from __future__ import annotations

import os

import pytest
from edge_helpers import run_edge, transports_for


def seeds_option(config: pytest.Config) -> str:
    """--parity-seeds, else $FUSE_HARNESS_PARITY_SEEDS, else '' (the fixed seeds)."""
    value = config.getoption("parity_seeds", None) or os.environ.get("FUSE_HARNESS_PARITY_SEEDS") or ""
    return value.strip()


def budget_of(seeds: str) -> int:
    """The guest scenario's budget in seconds: 150 for the fixed seeds, 60 + 30 per seed beyond."""
    if not seeds:
        return 150
    count = len([s for s in seeds.split(",") if s.strip()]) if "," in seeds else int(seeds)
    return max(150, 60 + 30 * count)


@pytest.mark.long(25)
@pytest.mark.parametrize("ring", transports_for("transport-parity"))
def test_transport_parity(vm, request, run_dir, kernel, ring):
    """Creates, writes, reads (buffered, O_DIRECT, mmap), truncates, renames, links, unlinks,
    directories and xattrs, at and around max_write, max_pages * page and the pool/kmbuf
    buffer size, with errors the server injects and replies it corrupts (error out of range,
    wrong unique, lengths that lie): every call's result equals legacy's; the counters show
    the ring carried the calls."""
    seeds = seeds_option(request.config)
    try:
        budget = budget_of(seeds)
    except ValueError:
        pytest.fail(f"--parity-seeds {seeds!r}: a count or a comma list of seeds", pytrace=False)
    scale = getattr(vm.settings, "time_scale", 1.0)
    env = {"FUSE_HARNESS_PARITY_SEEDS": seeds} if seeds else None
    run_edge(vm, request, run_dir, kernel, "transport-parity", "parity", timeout=budget * scale + 90,
             extra=f"--transport {ring} --budget {budget}", env=env)
