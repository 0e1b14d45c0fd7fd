"""Optional sections of report.html: known issues, compare, bisect, benchmarks.

Each returns "" when its input (known-issues.yaml, compare.json, bisect.json, bench.json) is absent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from harness.bench import hostload
from harness.report.data import Run, baselines, bench_rows, harness_overhead, has_per_cpu
from harness.report.markup import badge, e, secs
from harness.report.style import COLOURS

log = logging.getLogger(__name__)


def known_issues(run: Run) -> str:
    if not run.known:
        return ""
    rows = []
    for k in run.known:
        hits = [c["nodeid"] for c in run.cases if k in run.known_for(c["nodeid"])]
        seen = "<br>".join(f"{badge(c['verdict'])} <span class='mono'>{e(c['nodeid'])}</span>"
                           for c in run.cases if c["nodeid"] in hits) or '<span class="muted">not in this run</span>'
        rows.append(f"<tr><td class='mono'>{e(k.id)}</td><td class='mono'>{'<br>'.join(e(t) for t in k.test)}</td>"
                    f"<td class='mono'>{e(k.kernel)}</td><td>{e(k.reason)}"
                    f"{'<pre>' + e(k.reproducer) + '</pre>' if k.reproducer else ''}</td><td>{seen}</td></tr>")
    return ('<h2 id="known">Known issues</h2><table><tr><th>id</th><th>test pattern</th><th>kernel</th>'
            f'<th>reason / reproducer</th><th>in this run</th></tr>{"".join(rows)}</table>')


#: How many of the slowest tests "Where the time went" lists.
SLOWEST = 12


def timings(run: Run) -> str:
    """Where the run's time went: its phases (metadata.json durations, the VM's boot) and the
    slowest tests with their share of all tests' time."""
    if not run.cases:
        return ""
    total = sum(float(c.get("seconds") or 0) for c in run.cases) or 1.0
    phases = {k: v for k, v in (run.meta.get("durations") or {}).items() if isinstance(v, (int, float))}
    chips = "".join(f"<span class='chip'>{e(k)} {e(secs(v))}</span>" for k, v in phases.items())
    chips += f"<span class='chip'>tests {e(secs(total))} ({len(run.cases)})</span>"
    overhead = harness_overhead(run.cases)
    if overhead:
        chips += f"<span class='chip'>{e(overhead)}</span>"
    rows = "".join(
        f"<tr><td class='mono'>{e(c['nodeid'])}</td><td class='num'>{e(secs(c.get('seconds') or 0))}</td>"
        f"<td class='num'>{e(secs(c.get('harness_seconds') or 0))}</td>"
        f"<td class='num'>{100 * float(c.get('seconds') or 0) / total:.1f}%</td></tr>"
        for c in sorted(run.cases, key=lambda c: -float(c.get("seconds") or 0))[:SLOWEST])
    return (f'<h2 id="time">Where the time went</h2><p>{chips}</p><table><tr><th>slowest tests</th>'
            f'<th class="num">time</th><th class="num" title="markers and kernel log around the test">harness</th>'
            f'<th class="num">share</th></tr>{rows}</table>')


def _items(title: str, items: list[Any], cls: str = "") -> str:
    """A list of dicts as a table (columns = union of keys), or of strings as a list."""
    if not items:
        return f"<h3>{e(title)}</h3><p class='muted'>none</p>"
    if all(isinstance(x, dict) for x in items):
        keys: list[str] = []
        for x in items:
            keys += [k for k in x if k not in keys]
        head = "".join(f"<th>{e(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(_cell(k, x.get(k)) for k in keys) + "</tr>" for x in items)
        return f"<h3 class='{cls}'>{e(title)} ({len(items)})</h3><table><tr>{head}</tr>{body}</table>"
    lis = "".join(f"<li class='mono'>{e(x)}</li>" for x in items)
    return f"<h3 class='{cls}'>{e(title)} ({len(items)})</h3><ul>{lis}</ul>"


def _cell(key: str, value: Any) -> str:
    if isinstance(value, str) and value in COLOURS:
        return f"<td>{badge(value)}</td>"
    if isinstance(value, float):
        return f"<td class='num'>{value:.2f}</td>"
    if isinstance(value, (dict, list)):
        return f"<td class='mono'>{e(json.dumps(value))}</td>"
    return f"<td class='mono'>{e(value)}</td>"


def compare(run: Run) -> str:
    c = run.compare
    if not c:
        return ""
    return (f'<h2 id="compare">Compared with another run</h2><p>base <code>{e(c.get("base"))}</code> → head '
            f'<code>{e(c.get("head"))}</code></p>'
            + _items("Regressions", c.get("regressions") or [], "worse")
            + _items("New kernel log findings", c.get("new_findings") or [], "worse")
            + _items("Newly passing", c.get("new_pass") or [], "good")
            + _items("Timing changes", c.get("timing") or [])
            + _bench_compare(c.get("bench")))


def _bench_compare(b: dict[str, Any] | None) -> str:
    """The moved/unmoved ratio tables of two bench runs (harness.bench.compare): throughput, per host CPU."""
    if not b or not b.get("rows"):
        return ""
    from harness.bench.compare import caveat, summary

    def cell(v: float, rng: list[float] | None) -> str:
        return f"{v:.2f}× {_range(rng)}".rstrip()

    def table(title: str, part: dict[str, Any]) -> str:
        rows = "".join(
            f"<tr><td class='mono'>{e(r['workload'])}</td><td class='mono'>{e(r['transport'])}</td>"
            f"<td class='num'>{cell(r['base_vs'], r['base_range'])}</td>"
            f"<td class='num'>{cell(r['head_vs'], r['head_range'])}</td>"
            f"<td class='num'>{'—' if r.get('p') is None else format(r['p'], '.3f')}</td>"
            f"<td class='{ {'up': 'good', 'down': 'worse'}.get(r['moved'] or '', '') }'>"
            f"{e({'up': 'up', 'down': 'down', '': '', None: '?'}[r['moved']])}</td></tr>" for r in part["rows"])
        return (f"<h3>{e(title)}</h3><p class='muted'>{e(summary(part))}.</p>"
                "<table><tr><th>workload</th><th>transport</th><th class='num'>base</th><th class='num'>head</th>"
                f"<th class='num'>p</th><th>moved</th></tr>{rows}</table>")

    note = f"<p class='worse'>{e(caveat(b))}</p>" if caveat(b) else ""
    per_cpu = b.get("per_cpu") or {}
    return (note + table(f"Benchmark ratios vs {b.get('baseline')}", b)
            + (table(f"Per host CPU, vs {b.get('baseline')}", per_cpu) if per_cpu.get("rows") else ""))


def bisect(run: Run) -> str:
    b = run.bisect
    if not b:
        return ""
    fb = b.get("first_bad") or {}
    first = (f'<div class="first-bad">first bad commit: <code>{e(fb.get("commit"))}</code> {e(fb.get("subject"))}</div>'
             if fb else '<p class="muted">bisection did not finish</p>')
    rows = "".join(f"<tr><td class='mono'>{e(s.get('commit'))}</td><td>{badge(str(s.get('verdict')))}</td>"
                   f"<td class='num'>{e(secs(s.get('seconds')))}</td></tr>" for s in b.get("steps") or [])
    repro = f"<p>Reproducer:</p><pre>{e(b['reproducer'])}</pre>" if b.get("reproducer") else ""
    return (f'<h2 id="bisect">Bisection</h2><p>good <code>{e(b.get("good"))}</code>'
            f' · bad <code>{e(b.get("bad"))}</code> · test <code>{e(b.get("test"))}</code></p>{first}'
            f"<table><tr><th>commit</th><th>verdict</th><th class='num'>time</th></tr>{rows}</table>{repro}")


def _range(rng: Sequence[float] | None) -> str:
    """`min – max` of the paired ratios, small and muted ('' without a range)."""
    return f"<small class='muted'>{rng[0]:.2f} – {rng[1]:.2f}</small>" if rng else ""


def _ratio(value: float | None, rng: Sequence[float] | None = None) -> str:
    """A ratio cell; green/red only when the whole min..max range of the paired ratios is past 5%."""
    if value is None:
        return "<td class='num muted'>—</td>"
    low, high = rng or (value, value)
    cls = "good" if low >= 1.05 else "worse" if high <= 0.95 else ""
    return f"<td class='num {cls}'>{value:.2f}×{'<br>' + _range(rng) if rng else ''}</td>"


def bench(run: Run) -> str:
    b = run.bench
    if not b:
        return ""
    from harness.report import plots

    charts = "".join(f'<figure><img alt="{e(title)}" src="{uri}"></figure>' for title, uri in plots.bench_charts(b))
    rows = []
    brows = bench_rows(b)
    per_cpu = has_per_cpu(brows)
    bases = baselines(b)
    for r in brows:
        s = r["stats"]
        rows.append(f"<tr><td class='mono'>{e(r['workload'])}</td><td class='mono'>{e(r['transport'])}</td>"
                    f"<td class='num'>{s.n}</td><td class='num'><b>{s.median:.4g}</b> {e(r['unit'])}</td>"
                    f"<td class='num'>{s.low:.4g} – {s.high:.4g}</td><td class='num'>{s.q1:.4g} – {s.q3:.4g}</td>"
                    + "".join(_ratio(r["vs"][base], r["vs_range"][base]) for base in bases)
                    + ("".join(_ratio(r["cpu_vs"][base], r["cpu_vs_range"][base]) for base in bases)
                       if per_cpu else "") + "</tr>")
    heads = "".join(f"<th class='num'>vs {e(base)}</th>" for base in bases)
    if per_cpu:
        heads += "".join(f"<th class='num'>per host CPU<br>vs {e(base)}</th>" for base in bases)
    host = b.get("host") or {}
    load = f"<p class='{'worse' if host.get('verdict') == 'noisy' else 'muted'}'>{e(hostload.sentence(host))}</p>"
    return (f'<h2 id="bench">Benchmarks</h2>{load}<p class="muted">{e(b.get("note", ""))}</p>'
            "<p class='muted'>Bars: median; box: interquartile range; whiskers: min–max; dots: samples. "
            "Ratios are relative performance, &gt;1 is better in either unit direction: the median of the "
            "per-round ratios (every round measures all transports back to back), min – max over the rounds "
            "below it; coloured only when the whole range is more than 5% away from 1. "
            "<i>Per host CPU</i>: the same ratios of each sample divided by the share of the host's CPU the VM "
            "got meanwhile; under TCG every guest cycle is a host cycle, so steal time and other load cancel out "
            "of them.</p>"
            f'<div class="charts">{charts}</div>'
            "<table><tr><th>workload</th><th>transport</th><th class='num'>n</th><th class='num'>median</th>"
            f"<th class='num'>min – max</th><th class='num'>IQR</th>{heads}</tr>{''.join(rows)}</table>")
