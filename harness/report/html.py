"""report.html: one self-contained page (inline CSS, PNG data URIs, no scripts, no fonts)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from harness.report import matrix, mutants, sections
from harness.report.data import BAD, Run, load
from harness.report.markup import Raw, badge, dl, e, link, secs
from harness.report.style import CSS, colour

log = logging.getLogger(__name__)


# -- sections ------------------------------------------------------------------------
def header(run: Run) -> str:
    status = run.status
    k = run.kernel
    counts = "".join(f'<div class="count" style="border-top:5px solid {colour(v)}"><b>{n}</b>'
                     f'<span style="color:{colour(v)}">{e(v)}</span></div>' for v, n in run.counts.items())
    what = " · ".join(e(x) for x in (k.get("kernel_release"), k.get("target") and f"{k['target']}/{k.get('profile')}",
                                       k.get("series")) if x)
    when = f"{e(run.meta.get('started'))} → {e(run.meta.get('finished'))}"
    return (f'<header class="band" style="background:{colour(status)}"><div class="row">'
            f'<div class="status">{e(status)}</div>'
            f'<div class="title"><h1>fuse-harness run {e(run.path.name)}</h1><div>{what or "kernel unknown"}</div>'
            f'<div>{when}</div></div><div class="counts">{counts}</div></div></header>')


def tested(run: Run) -> str:
    k, vm, host = run.kernel, run.vm, run.meta.get("host") or {}
    abi = k.get("abi") or {}
    cards = [
        ("Kernel", [("release", k.get("kernel_release")), ("target", k.get("target")), ("profile", k.get("profile")),
                    ("source", k.get("source")), ("identity", k.get("source_identity")), ("tree", k.get("tree"))]),
        ("Series", [("series", k.get("series") or "none (base kernel)"), ("identity", k.get("series_identity")),
                    ("FUSE minor", abi.get("minor")), ("generations", ", ".join(map(str, abi.get("generations", [])))),
                    ("transports", ", ".join(abi.get("transports", [])))]),
        ("Build", [("compiler", k.get("compiler")), ("build dir", k.get("build_dir")), ("key", k.get("build_key")),
                   ("build", _build_line(k)), ("image", k.get("image"))]),
        ("Virtual machine", [("accel", Raw(_accel(vm))),
                             ("boot", "none: a kept guest" if vm.get("adopted") else secs(vm.get("boot_seconds"))),
                             ("command", Raw(_command(vm)) if vm.get("command") else None)]),
        ("Host", [("machine", host.get("machine")), ("kernel", host.get("kernel")), ("python", host.get("python")),
                  ("cpus", host.get("cpus")), ("harness", run.meta.get("harness_version")),
                  ("argv", " ".join(map(str, run.meta.get("argv") or [])))]),
        ("Durations", [(name, secs(v)) for name, v in (run.meta.get("durations") or {}).items()]),
    ]
    html = "".join(f'<div class="card"><h3>{e(title)}</h3>{dl(items)}</div>' for title, items in cards)
    cfg = run.config_highlights()
    if cfg:
        chips = "".join(f'<span class="chip {"off" if v == "n" else "on"}">{e(o)}={e(v)}</span>'
                        for o, v in cfg.items())
        html += (f'<div class="card"><h3>Config highlights</h3>{chips}'
                 f'<div class="muted">full config: {link(run, "kernel.config")}</div></div>')
    return f'<h2 id="tested">What was tested</h2><div class="cards">{html}</div>'


def _build_line(k: dict[str, Any]) -> str | None:
    if "build_seconds" not in k:
        return None
    how = "reused from cache" if k.get("build_reused") else "built"
    return f"{how}, {secs(k.get('build_seconds'))}"


def _accel(vm: dict[str, Any]) -> str:
    if not vm.get("accel"):
        return "—"
    kind = str(vm["accel"]).upper()
    style = "on" if kind == "KVM" else "off"
    return f'<span class="chip {style}">{e(kind)}</span> {e(vm.get("accel_reason"))}'


def _command(vm: dict[str, Any]) -> str:
    cmd = vm["command"]
    text = " ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
    return f"<details><summary>vng command line</summary><pre>{e(text)}</pre></details>"


def results(run: Run) -> str:
    if run.summary is None:
        return ('<h2 id="results">Results</h2><p class="finding">No summary.json: the run did not finish '
                f'(status {e(run.meta.get("status"))}). {e(run.meta.get("error", ""))}</p>')
    order = {v: i for i, v in enumerate(("FAIL", "ERROR", "TIMEOUT", "XPASS"))}
    cases = sorted(run.cases, key=lambda c: (order.get(c["verdict"], 9 if not c.get("findings") else 5)))
    rows = "".join(_case_row(run, c) for c in cases)
    return (f'<h2 id="results">Results ({len(run.cases)} tests, failures first)</h2>'
            '<table><tr><th>verdict</th><th>test</th><th class="num">time</th><th>reason and evidence</th></tr>'
            f"{rows}</table>")


def _case_row(run: Run, c: dict[str, Any]) -> str:
    parts = [f'<div class="reason">{e(c.get("reason"))}</div>' if c.get("reason") else ""]
    if c.get("vm_outcome"):
        parts.append(f'<div class="finding">guest: {e(c["vm_outcome"])}</div>')
    for i, f in enumerate(c.get("findings") or []):
        excerpt = run.excerpt(c, f)
        body = f"<pre>{e(excerpt)}</pre>" if excerpt else '<div class="muted">excerpt not found in dmesg file</div>'
        open_ = " open" if i == 0 and c["verdict"] in BAD else ""
        parts.append(f'<details{open_}><summary><span class="finding">{e(f.get("fingerprint"))}</span> '
                     f'{e(f.get("line"))}</summary>{body}</details>')
    subs = c.get("subtests") or []
    if subs:
        tally: dict[str, int] = {}
        for s in subs:
            tally[s.get("verdict", "?")] = tally.get(s.get("verdict", "?"), 0) + 1
        summary = ", ".join(f"{n} {v}" for v, n in sorted(tally.items()))
        rows = "".join(f"<tr><td>{badge(s.get('verdict', '?'))}</td><td class='mono'>{e(s.get('name'))}</td>"
                       f"<td>{e(s.get('reason', ''))}</td></tr>" for s in subs)
        open_ = " open" if any(s.get("verdict") in BAD for s in subs) else ""
        parts.append(f"<details{open_}><summary>{len(subs)} guest subtests: {e(summary)}</summary>"
                     f"<table>{rows}</table></details>")
    evidence = []
    if c.get("dmesg_file"):
        evidence.append("dmesg " + link(run, c["dmesg_file"]))
    parts.append(f'<div class="muted">{" · ".join(evidence)}</div>' if evidence else "")
    parts.append(f"<details><summary>reproduce</summary><pre>{e(run.test_command(c['nodeid']))}</pre></details>")
    known = "".join(f'<span class="tag" title="{e(k.reason)}">known: {e(k.id)}</span>'
                    for k in run.known_for(c["nodeid"]))
    cls = ' class="bad"' if c["verdict"] in BAD else ""
    return (f"<tr{cls}><td>{badge(c['verdict'])}</td><td class='mono'>{e(c['nodeid'])}{known}</td>"
            f"<td class='num'>{e(secs(c.get('seconds')))}</td><td>{''.join(parts)}</td></tr>")


def reproduce(run: Run) -> str:
    lines = run.reproducer_lines()
    if not lines:
        return ""
    return (f'<h2 id="reproduce">Reproduce</h2><p>Whole run: {link(run, "reproduce.sh")} '
            f'(<code>sh {e(run.path / "reproduce.sh")}</code>)</p><pre>{e(chr(10).join(lines))}</pre>')


def footer(run: Run) -> str:
    files = ["metadata.json", "summary.json", "results.ktap", "junit.xml", "kernel.config", "reproduce.sh",
             "bench.json", "compare.json", "bisect.json", "mutants.json"]
    files += sorted(p.name for p in run.path.glob("console-*.log"))
    present = " · ".join(link(run, f) for f in files if (run.path / f).exists())
    return (f"<footer>Files: {present}<br>Generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))} by fuse-harness "
            f"{e(run.meta.get('harness_version'))} from {e(run.path)}.</footer>")


def page(run: Run) -> str:
    body = [results(run), matrix.section(run), sections.timings(run), sections.bench(run), sections.compare(run),
            sections.bisect(run),
            mutants.section(run),
            sections.known_issues(run),
            tested(run), reproduce(run)]
    title = f"{run.status} · fuse-harness {run.path.name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body>{header(run)}<main>{''.join(body)}{footer(run)}</main></body></html>\n")


def render_html(run_dir: Path, known_issues: Path | None = None) -> Path:
    """Write run_dir/report.html and return its path."""
    run = load(Path(run_dir), known_issues)
    out = run.path / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page(run), encoding="utf-8")
    tmp.replace(out)
    log.info("report: %s", out)
    return out
