"""transport-parity: one call sequence over legacy /dev/fuse and over a ring transport must
give the same results (guest/parity/: generator, faults, oracle, runs).

Per seed (FUSE_HARNESS_PARITY_SEEDS: empty = the default seeds, N = that many, a,b = those),
`FUSE_HARNESS_PARITY_CALLS` calls (default 24) run on a fresh mount over legacy (the
reference), then over --transport, in this guest. The first call whose normalized result
differs is a divergence: it is reported with the seed, the call and a shrunk sequence (the
fewest calls that still diverge the same way), replayable with FUSE_HARNESS_PARITY_KEEP
(call indices of that seed). Cases: the reference ran, the transport carried the calls
(counters), and one parity case per call class (gen.CLASSES); a class with no call compared
is `not exercised`.
"""

from __future__ import annotations

import itertools
import os
import time

from guest.edge import time_scale
from guest.edge.core import Ctx
from guest.parity.gen import CLASSES, config_of, describe, generate, parse_seeds
from guest.parity.oracle import divergence_class, explain, first_divergence, shrink
from guest.parity.serve import DEVFUSE_ALWAYS, Run, run_sequence
from guest.transports import base

RESERVE = 20.0  # seconds kept for cleanup and the leak check
SHRINK_SECONDS = 40.0
MAX_REMOVALS = 4  # diverging calls taken out of one seed before the rest goes uncompared


def _env_int_list(name: str) -> tuple[int, ...]:
    text = os.environ.get(name, "").strip()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{name}={text!r}: a comma list of integers") from None


def _stopped(run: Run) -> str | None:
    bad = [r for r in run.raw if "hung" in r or "died" in r]
    return f"call {len(run.raw) - 1}: {bad[0]}" if bad else None


class Parity:
    """The state of one transport-parity scenario."""

    def __init__(self, ctx: Ctx, transport: str) -> None:
        self.ctx, self.transport = ctx, transport
        cls = base.get(transport)
        self.zc_open = bool(cls.zero_copy and cls.needs_bufpool)  # 7.3: FOPEN_IO_URING_ZERO_COPY
        self.call_timeout = 10.0 * time_scale()
        self.tags = itertools.count()
        self.compared: dict[str, set[tuple[int, int]]] = {c: set() for c in CLASSES}  # (seed, call)
        self.found: dict[str, list[str]] = {c: [] for c in CLASSES}
        self.reference: list[str] = []
        self.runs: list[Run] = []
        self.calls_ran = 0

    def pair(self, seed: int, calls: list[dict]) -> tuple[Run, Run]:
        cfg = config_of(seed)
        runs = []
        for t in ("legacy", self.transport):
            runs.append(run_sequence(self.ctx, f"{t[0]}{next(self.tags)}", t, cfg, calls,
                                     self.call_timeout, self.zc_open))
        return runs[0], runs[1]

    def seed(self, seed: int, n: int, keep: tuple[int, ...]) -> None:
        """Run one seed; after a divergence, run it again without the diverging call (up to
        MAX_REMOVALS times), so the calls after it are compared too: one finding early in a
        sequence must not leave the later classes `not exercised`."""
        calls = generate(seed, n)
        if keep:
            calls = [c for c in calls if c["i"] in keep]
        for attempt in range(MAX_REMOVALS + 1):
            k = self._attempt(seed, n, calls, first=attempt == 0)
            if k is None:
                return
            calls = calls[:k] + calls[k + 1:]
        self.ctx.diag(f"seed {seed}: {MAX_REMOVALS} diverging calls removed; the rest was not compared")

    def _attempt(self, seed: int, n: int, calls: list[dict], first: bool) -> int | None:
        """One legacy + transport run of calls: counts the calls compared equal and records a
        divergence; the index of the diverging call when the seed should run again without it."""
        ref, got = self.pair(seed, calls)
        self.runs.append(got)
        self.calls_ran += len(got.raw)
        self.ctx.diag(f"seed {seed} ({config_of(seed).name}): {len(calls)} calls, legacy {len(ref.raw)} "
                      f"in {ref.seconds:.1f}s, {self.transport} {len(got.raw)} in {got.seconds:.1f}s")
        if ref.counters.get("paths", {}).get("io_uring"):
            self.reference.append(f"seed {seed}: the legacy reference was served over io_uring")
        if got.setup_error:
            return None
        k = first_divergence(ref.results, got.results)
        stop = _stopped(ref)
        upto = len(got.results) if k is None else k
        for c, r in zip(calls[:upto], ref.results[:upto], strict=False):
            self.compared[divergence_class(c, r, None)].add((seed, c["i"]))
        if stop is not None and (k is None or k >= len(ref.raw) - 1):
            if first:
                self.reference.append(f"seed {seed}: legacy stopped at {stop}; compared up to there")
            return None
        if k is None:
            return None
        a = ref.results[k] if k < len(ref.results) else None
        b = got.results[k] if k < len(got.results) else None
        klass = divergence_class(calls[k], a, b)
        text = explain(seed, calls, k, ref.results, got.results, self.transport)
        if self.found[klass]:
            self.found[klass].append(text + " (not shrunk: this case has a reproducer already)")
        else:
            self.found[klass].append(text + self.reproducer(seed, n, calls, k, klass))
        return k if _stopped(got) is None else None  # a hung call ends the seed

    def reproducer(self, seed: int, n: int, calls: list[dict], k: int, klass: str) -> str:
        def diverges(cand: list[dict]) -> bool:
            ref, got = self.pair(seed, cand)
            j = first_divergence(ref.results, got.results)
            if j is None or _stopped(ref) is not None:
                return False
            a = ref.results[j] if j < len(ref.results) else None
            b = got.results[j] if j < len(got.results) else None
            return divergence_class(cand[j], a, b) == klass

        budget = min(SHRINK_SECONDS * time_scale(), self.ctx.left() - RESERVE)
        small, tests, complete = shrink(calls, k, diverges, deadline=time.monotonic() + max(0.0, budget))
        keep = ",".join(str(c["i"]) for c in small)
        how = "shrunk" if complete else "partly shrunk (budget)"
        return (f"; {how} to {len(small)} of {k + 1} calls in {tests} tries: "
                + " ; ".join(describe(c) for c in small)
                + f"; replay: FUSE_HARNESS_PARITY_SEEDS={seed}, FUSE_HARNESS_PARITY_CALLS={n} "
                  f"FUSE_HARNESS_PARITY_KEEP={keep} python3 -m guest edge transport-parity "
                  f"--transport {self.transport}")

    def proof(self, not_run: list[int]) -> tuple[bool, str]:
        """The transport carried the calls: io_uring requests, nothing but FORGET/INTERRUPT
        over /dev/fuse, zero-copy or kmbuf buffers where the transport has them."""
        cls = base.get(self.transport)
        errors = [r.setup_error for r in self.runs if r.setup_error]
        uring = sum(r.counters.get("paths", {}).get("io_uring", 0) for r in self.runs)
        stray = sum(n for r in self.runs for op, n in r.devfuse_ops.items() if op not in DEVFUSE_ALWAYS)
        zc = sum(r.counters.get("zero_copy", {}).get(k, 0) for r in self.runs for k in ("read", "write"))
        zc_bytes = sum(r.counters.get("zero_copy", {}).get("bytes", 0) for r in self.runs)
        kmbuf = sum(r.counters.get("kmbuf", {}).get("selected", 0) for r in self.runs)
        why = []
        if errors:
            why.append(f"setup failed: {errors[0]}")
        if not_run:
            why.append(f"seeds not run (budget): {not_run}")
        if not uring:
            why.append("not exercised: no request reached the server over io_uring")
        if stray:
            why.append(f"{stray} requests other than FORGET/INTERRUPT came over /dev/fuse")
        if cls.zero_copy and not zc:
            why.append("not exercised: no READ/WRITE moved through a zero-copy slot")
        if getattr(cls, "init_flags", None) and not kmbuf:
            why.append("not exercised: no request carried a kmbuf buffer")
        text = (f"{self.calls_ran} calls ran over {self.transport}: io_uring carried {uring} requests, "
                f"/dev/fuse {stray} besides FORGET/INTERRUPT, zero-copy READ/WRITE {zc} ({zc_bytes} bytes), "
                f"kmbuf buffers selected {kmbuf}")
        return not why, "; ".join([*why, text])


def transport_parity(ctx: Ctx, args) -> None:  # noqa: ANN001
    """Run the seeds (see module docstring) and report the cases."""
    seeds = parse_seeds(os.environ.get("FUSE_HARNESS_PARITY_SEEDS"))
    n = int(os.environ.get("FUSE_HARNESS_PARITY_CALLS") or 24)
    keep = _env_int_list("FUSE_HARNESS_PARITY_KEEP")
    if keep and len(seeds) != 1:
        raise ValueError("FUSE_HARNESS_PARITY_KEEP replays one seed: give FUSE_HARNESS_PARITY_SEEDS=a,")
    p = Parity(ctx, args.transport)
    not_run = []
    for seed in seeds:
        if ctx.left() < RESERVE + 10.0 * time_scale():
            not_run.append(seed)
            continue
        p.seed(seed, n, keep)
    ran = len(seeds) - len(not_run)
    ctx.result("reference_legacy", bool(ran) and not p.reference,
               "; ".join(p.reference) or f"legacy ran {ran} seeds over /dev/fuse without a hung call")
    ok, text = p.proof(not_run)
    ctx.result("exercised", ok, text)
    for c in CLASSES:
        if p.found[c]:
            ctx.result(f"parity_{c}", False, " | ".join(p.found[c]))
        elif not p.compared[c]:
            ctx.result(f"parity_{c}", False, f"not exercised: no {c} call was compared")
        else:
            ctx.result(f"parity_{c}", True, f"{len(p.compared[c])} calls equal to legacy")
