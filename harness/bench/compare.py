"""Two bench.json side by side: did the relative performance of each transport move?

Absolute MiB/s follow the host's load; the ratio against a baseline transport measured in the
same rounds does not (harness.bench.model.paired_ratios). A transport "moved" when the head run's
median ratio lies outside the base run's min..max of per-round ratios *and* the two runs'
per-round ratios differ by a rank-sum test at p < ALPHA. The range alone is not enough: with 5
rounds a repeat of the same kernel lands outside it for about 1 row in 6 by chance; the test
keeps chance moves near 1 in 20. Run the same kernel twice and (almost) nothing should move: that
is the reproducibility check; run two kernels and what moves is the change. The same is done for
the ratios per host CPU the VM got (harness.report.data._per_cpu), which steal time and other
load do not move. Pure: dicts in, dicts and text out.
"""

from __future__ import annotations

import math
import textwrap
from itertools import combinations
from typing import Any

from harness.report.data import bench_rows

#: The baseline the comparison is stated against.
BASELINE = "legacy"
#: The rank test's level: a row needs p below it to count as moved.
ALPHA = 0.05
#: Up to this many values in both runs together the rank test is exact (enumerated), beyond it normal.
EXACT_UP_TO = 16


def _ranks(values: list[float]) -> list[float]:
    """Ranks 1..N of values, ties getting their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of the Wilcoxon rank-sum (Mann-Whitney) test of a against b; None below 2 values a side.

    Exact by enumerating every split of the pooled ranks when there are at most EXACT_UP_TO values,
    ties included; the normal approximation with continuity correction beyond that.
    """
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        return None
    ranks = _ranks([*a, *b])
    mean = n * (n + m + 1) / 2
    observed = abs(sum(ranks[:n]) - mean) - 1e-9
    if n + m <= EXACT_UP_TO:
        splits = [abs(sum(c) - mean) for c in combinations(ranks, n)]
        return sum(1 for d in splits if d >= observed) / len(splits)
    sigma = math.sqrt(n * m * (n + m + 1) / 12)
    return min(1.0, math.erfc(max(0.0, observed - 0.5) / sigma / math.sqrt(2)))


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p the rank test can give with n and m values (2 / C(n+m, n))."""
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


def _rng(rng: tuple[float, float] | None) -> list[float] | None:
    return [round(x, 4) for x in rng] if rng else None


def _rows(base_rows: list[dict[str, Any]], head_rows: list[dict[str, Any]], baseline: str,
          metric: str) -> list[dict[str, Any]]:
    """Rows of one metric (bench_rows of both runs): "" for throughput, "cpu_" for per host CPU."""
    index = {(r["workload"], r["transport"]): r for r in base_rows}
    rows = []
    for h in head_rows:
        b = index.get((h["workload"], h["transport"]))
        if b is None or h["transport"] == baseline:
            continue
        bv, hv = b[metric + "vs"].get(baseline), h[metric + "vs"].get(baseline)
        if bv is None or hv is None:
            continue
        brange, hrange = (_rng(x[metric + "vs_range"].get(baseline)) for x in (b, h))
        bp, hp = (x[metric + "ratios"].get(baseline) or [] for x in (b, h))
        p = rank_p(bp, hp)
        side = "" if brange is None else "up" if hv > brange[1] else "down" if hv < brange[0] else ""
        judgeable = brange is not None and p is not None and smallest_p(len(bp), len(hp)) < ALPHA
        moved = (side if p is not None and p < ALPHA else "") if judgeable else None
        rows.append({"workload": h["workload"], "transport": h["transport"], "unit": h["unit"],
                     "base_median": b["stats"].median, "head_median": h["stats"].median,
                     "base_vs": round(bv, 4), "base_range": brange, "head_vs": round(hv, 4), "head_range": hrange,
                     "p": None if p is None else round(p, 4), "outside": bool(side), "moved": moved})
    return rows


def _counted(rows: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [r for r in rows if r["moved"] is not None]
    return {"rows": rows, "compared": len(judged), "moved": sum(1 for r in judged if r["moved"]), "alpha": ALPHA}


def compare_bench(base: dict[str, Any], head: dict[str, Any], baseline: str = BASELINE) -> dict[str, Any]:
    """Per workload and transport both runs measured: the ratios vs baseline and whether head moved.

    Returns {"baseline", "rows": [...], "moved": n, "compared": n, "alpha", "noisy", "host",
    "per_cpu": {"rows", "moved", "compared", "alpha"}}: the throughput ratios at the top, the
    ratios of throughput per host CPU the VM got under "per_cpu" (empty rows without host data).
    A row's "moved" is "up" or "down" (outside the base range and p < ALPHA), "" (not moved) or
    None (cannot be judged: the base has no range, or too few rounds for the test to reach
    ALPHA); "p" is the rank test's p.
    """
    noisy = [name for name, doc in (("base", base), ("head", head))
             if (doc.get("host") or {}).get("verdict") == "noisy"]
    rows = bench_rows(base), bench_rows(head)
    return {"baseline": baseline, **_counted(_rows(*rows, baseline, "")), "noisy": noisy,
            "host": {"base": base.get("host"), "head": head.get("host")},
            "per_cpu": _counted(_rows(*rows, baseline, "cpu_"))}


def summary(result: dict[str, Any]) -> str:
    """`2 of 28 moved ...`, with what chance alone would give."""
    n, alpha = result["compared"], result.get("alpha", ALPHA)
    unjudged = len(result.get("rows") or []) - n
    text = (f"{result['moved']} of {n} moved (head median outside the base run's range and rank test "
            f"p < {alpha:g}; by chance alone about {alpha * n:.1f})")
    if unjudged:
        text += f"; {unjudged} not judged (fewer than 4 rounds in a run, or no range)"
    return text


def caveat(result: dict[str, Any]) -> str:
    """What the moved count means given the two runs' host load ('' when both hosts were steady)."""
    noisy = result.get("noisy") or []
    if noisy:
        runs = "both runs" if len(noisy) > 1 else f"the {noisy[0]} run"
        return (f"{runs} had a noisy host (see the Host load lines): throughput rows "
                "that moved may be the host, not the kernel; the per-host-CPU rows cancel steal and other load")
    hosts = result.get("host") or {}
    if not all(hosts.get(k) for k in ("base", "head")):
        return "host load was not measured in both runs (older bench.json): moved rows may be the host"
    return ""


def _table(part: dict[str, Any]) -> list[str]:
    def cell(v: float, rng: list[float] | None) -> str:
        return f"{v:.2f}" + (f" ({rng[0]:.2f}-{rng[1]:.2f})" if rng else "")

    lines = [*textwrap.wrap(summary(part), 78, initial_indent="  ", subsequent_indent="  "),
             f"  {'workload':<14}{'transport':<19}{'base':<17}{'head':<17}{'p':>5}  move"]
    for r in part["rows"]:
        mark = {"up": "UP", "down": "DOWN", "": "", None: "?"}[r["moved"]]
        pval = "-" if r.get("p") is None else f"{r['p']:.3f}"
        lines.append(f"  {r['workload']:<14}{r['transport']:<19}{cell(r['base_vs'], r['base_range']):<17}"
                     f"{cell(r['head_vs'], r['head_range']):<17}{pval:>5}  {mark}".rstrip())
    return lines


def render(result: dict[str, Any]) -> list[str]:
    """Text lines: throughput ratios, then ratios per host CPU, one row per workload and transport."""
    if not result.get("rows"):
        return []
    base = result.get("baseline", BASELINE)
    lines = [f"benchmark, relative performance vs {base} (median of per-round ratios; min-max):",
             *textwrap.wrap(f"NOTE: {caveat(result)}" if caveat(result) else "", 78, initial_indent="  ",
                            subsequent_indent="  "),
             *_table(result)]
    per_cpu = result.get("per_cpu") or {}
    if per_cpu.get("rows"):
        lines += ["", f"per host CPU the VM got (steal and other load cancel out), vs {base}:", *_table(per_cpu)]
    return lines
