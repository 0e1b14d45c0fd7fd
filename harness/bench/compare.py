"""Two bench.json side by side: did the relative performance of each transport move?

Absolute MiB/s follow the host's load; the ratio against a baseline transport measured in the
same rounds does not (harness.bench.model.paired_ratios). So a transport "moved" when the head
run's median ratio lies outside the base run's min..max of per-round ratios. Run the same kernel
twice and nothing should move (that is the reproducibility check); run two kernels and what
moves is the change. Pure: dicts in, dicts and text out.
"""

from __future__ import annotations

from typing import Any

from harness.report.data import bench_rows

#: The baseline the comparison is stated against.
BASELINE = "legacy"


def _rng(rng: tuple[float, float] | None) -> list[float] | None:
    return [round(x, 4) for x in rng] if rng else None


def compare_bench(base: dict[str, Any], head: dict[str, Any], baseline: str = BASELINE) -> dict[str, Any]:
    """Per workload and transport both runs measured: the ratios vs baseline and whether head moved.

    Returns {"baseline", "rows": [...], "moved": n, "compared": n}; a row's "moved" is "up", "down"
    or "" (inside the base range), None when the base has no range (one round or no pairing).
    """
    index = {(r["workload"], r["transport"]): r for r in bench_rows(base)}
    rows = []
    for h in bench_rows(head):
        b = index.get((h["workload"], h["transport"]))
        if b is None or h["transport"] == baseline:
            continue
        bv, hv = b["vs"].get(baseline), h["vs"].get(baseline)
        if bv is None or hv is None:
            continue
        brange, hrange = _rng(b["vs_range"].get(baseline)), _rng(h["vs_range"].get(baseline))
        moved = None if brange is None else "up" if hv > brange[1] else "down" if hv < brange[0] else ""
        rows.append({"workload": h["workload"], "transport": h["transport"], "unit": h["unit"],
                     "base_median": b["stats"].median, "head_median": h["stats"].median,
                     "base_vs": round(bv, 4), "base_range": brange, "head_vs": round(hv, 4), "head_range": hrange,
                     "moved": moved})
    judged = [r for r in rows if r["moved"] is not None]
    noisy = [name for name, doc in (("base", base), ("head", head))
             if (doc.get("host") or {}).get("verdict") == "noisy"]
    return {"baseline": baseline, "rows": rows, "compared": len(judged),
            "moved": sum(1 for r in judged if r["moved"]), "noisy": noisy,
            "host": {"base": base.get("host"), "head": head.get("host")}}


def caveat(result: dict[str, Any]) -> str:
    """What the moved count means given the two runs' host load ('' when both hosts were steady)."""
    noisy = result.get("noisy") or []
    if noisy:
        return (f"the {' and '.join(noisy)} run had a noisy host (see its Host load line): rows that moved "
                "may be the host, not the kernel; rerun on a quiet host before reading them")
    hosts = result.get("host") or {}
    if not all(hosts.get(k) for k in ("base", "head")):
        return "host load was not measured in both runs (older bench.json): moved rows may be the host"
    return ""


def render(result: dict[str, Any]) -> list[str]:
    """Text lines: one row per workload and transport, the moved ones marked."""
    rows = result.get("rows") or []
    if not rows:
        return []
    base = result.get("baseline", BASELINE)

    def cell(v: float, rng: list[float] | None) -> str:
        return f"{v:.2f}" + (f" ({rng[0]:.2f}-{rng[1]:.2f})" if rng else "")

    lines = [f"benchmark, relative performance vs {base} (median of the per-round ratios, min-max):",
             f"  {result['moved']} of {result['compared']} moved outside the base run's range",
             *([f"  NOTE: {caveat(result)}"] if caveat(result) else []),
             f"  {'workload':<14}{'transport':<19}{'base':<18}{'head':<18}moved"]
    for r in rows:
        mark = {"up": "UP", "down": "DOWN", "": "", None: "?"}[r["moved"]]
        lines.append(f"  {r['workload']:<14}{r['transport']:<19}{cell(r['base_vs'], r['base_range']):<18}"
                     f"{cell(r['head_vs'], r['head_range']):<18}{mark}".rstrip())
    return lines
