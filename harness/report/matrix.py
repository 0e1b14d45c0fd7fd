"""The scenario x transport matrix: for each guest edge scenario of a run, over each ring
transport, whether it ran and how it ended.

A cell is one of STATES. Its source is summary.json: each case's `scenario` (the edge scenario
its test runs) and `transport` (its transport marker, the parameter's for a parametrized test),
recorded by harness.plugin.results; what a cell would be without a case comes from the
scenario's declaration (guest/edge SCENARIOS: `needs`, `lacks`, the default tier) and the table
of transport features. A scenario that sets its own rings up and names no transport has its
verdict in the `own rings` column; when its cases are named per transport (request-timeout:
`zero_copy_held`, ...) its subtests also give a cell per transport.
"""

from __future__ import annotations

import fnmatch
import textwrap
from dataclasses import dataclass
from typing import Any

from harness.report.data import Run
from harness.report.markup import e

#: The cell states, worst first (two cases of one cell: the worse wins).
STATES = ("failed", "known issue", "passed", "skipped", "not run", "slow tier", "n/a")
#: The column of a scenario that sets its own rings up without a transport marker.
OWN = "own rings"
#: One letter per state for `report --text`.
LETTERS = {"failed": "F", "known issue": "K", "passed": "P", "skipped": "S", "not run": ".",
           "slow tier": "s", "n/a": "-"}
#: Column heads for `report --text` (at most 4 characters).
SHORT = {OWN: "own", "iovec": "iov", "bufpool": "bp", "bufpool-registered": "bpr", "zero-copy": "zc",
         "bufring": "br", "kmbuf": "km", "kmbuf-zero-copy": "kmzc"}
#: report.html colours of the states.
COLOURS = {"failed": "#cf222e", "known issue": "#8250df", "passed": "#1a7f37", "skipped": "#6e7781",
           "not run": "#eaeef2", "slow tier": "#eaeef2", "n/a": "#ffffff"}


@dataclass(frozen=True)
class Cell:
    """What one scenario did over one transport: a state of STATES, the why (a skip's reason,
    the known issues, the first line of a failure, what a transport lacks), the tests behind it."""

    state: str
    detail: str = ""
    nodeids: tuple[str, ...] = ()


def columns() -> tuple[str, ...]:
    """OWN, then the ring transports in the feature table's order."""
    from guest.transports.features import RINGS

    return (OWN, *RINGS)


def _first(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:200] if (text or "").strip() else ""


def _case_cell(run: Run, c: dict[str, Any]) -> Cell:
    v, ids = c.get("verdict"), (c["nodeid"],)
    known = ", ".join(k.id for k in run.known_for(c["nodeid"]))
    if v == "PASS":
        return Cell("passed", "", ids)
    if v == "XFAIL":
        return Cell("known issue", known or _first(c.get("reason")), ids)
    if v == "SKIP":
        return Cell("skipped", _first(c.get("reason")), ids)
    why = f"XPASS: known issue {known} did not show" if v == "XPASS" else f"{v}: {_first(c.get('reason'))}"
    return Cell("failed", why, ids)


def _worse(a: Cell | None, b: Cell) -> Cell:
    if a is None:
        return b
    first, second = (a, b) if STATES.index(a.state) <= STATES.index(b.state) else (b, a)
    return Cell(first.state, first.detail, a.nodeids + b.nodeids)


def _per_transport(run: Run, c: dict[str, Any]) -> dict[str, Cell]:
    """Cells from the subtests of a case whose case names start with a transport's name."""
    from guest.transports.features import RINGS

    prefixes = sorted(((t.replace("-", "_") + "_", t) for t in RINGS), key=lambda p: -len(p[0]))
    groups: dict[str, list[dict[str, str]]] = {}
    for s in c.get("subtests") or []:
        case = s.get("name", "").split(".", 1)[-1]
        t = next((t for p, t in prefixes if case.startswith(p)), None)
        if t is not None:
            groups.setdefault(t, []).append({**s, "case": case})
    patterns = [p for k in run.known_for(c["nodeid"]) for p in (k.cases or ("*",))]
    out = {}
    for t, subs in groups.items():
        bad = [s for s in subs if s.get("verdict") not in ("PASS", "SKIP", "XFAIL")]
        names = ", ".join(f"{s['case']} {s.get('verdict')}" for s in bad)
        if not bad:
            skipped = all(s.get("verdict") == "SKIP" for s in subs)
            out[t] = Cell("skipped" if skipped else "passed", subs[0].get("reason", "") if skipped else "",
                          (c["nodeid"],))
        elif c.get("verdict") == "XFAIL" and all(any(fnmatch.fnmatchcase(s["name"], p) for p in patterns)
                                                  for s in bad):
            ids = ", ".join(k.id for k in run.known_for(c["nodeid"]))
            out[t] = Cell("known issue", f"{ids}: {names}", (c["nodeid"],))
        else:
            out[t] = Cell("failed", names, (c["nodeid"],))
    return out


def build(run: Run) -> list[tuple[str, dict[str, Cell]]]:
    """(scenario, {column: Cell}) for every edge scenario a case of the run names, in the order
    of guest/edge SCENARIOS (a scenario it no longer has comes last, its cells as recorded)."""
    from guest import edge
    from guest.transports import features as F

    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for c in run.cases:
        if c.get("scenario"):
            by_scenario.setdefault(c["scenario"], []).append(c)
    order = [n for n in edge.SCENARIOS if n in by_scenario] + [n for n in by_scenario if n not in edge.SCENARIOS]
    rows = []
    for name in order:
        s = edge.SCENARIOS.get(name)
        cells: dict[str, Cell] = {}
        for c in by_scenario[name]:
            col = c.get("transport") or OWN
            if col not in columns():
                continue
            cells[col] = _worse(cells.get(col), _case_cell(run, c))
            if col == OWN:
                for t, cell in _per_transport(run, c).items():
                    cells[t] = _worse(cells.get(t), cell)
        fits = edge.transports_for(name) if s is not None and s.needs is not None else None
        for col in columns():
            if col in cells:
                continue
            if fits is None or col == OWN:
                cells[col] = Cell("n/a", "sets its own rings up" if fits is None else "runs over a transport")
            elif col not in fits:
                cells[col] = Cell("n/a", f"needs {', '.join(s.needs)}; {col} {F.missing(col, s.needs, s.lacks)}")
            elif not edge.default_tier(name, col):
                cells[col] = Cell("slow tier", "run by make test-slow (-m slow)")
            else:
                cells[col] = Cell("not run", "not selected in this run")
        rows.append((name, cells))
    return rows


def section(run: Run) -> str:
    """report.html's matrix section ('' when the run has no edge scenario)."""
    rows = build(run)
    if not rows:
        return ""
    head = "".join(f"<th>{e(c)}</th>" for c in columns())

    def td(cell: Cell) -> str:
        fg = "#fff" if cell.state in ("failed", "known issue", "passed", "skipped") else "#59636e"
        title = "; ".join(x for x in (cell.detail, *cell.nodeids) if x)
        return (f'<td style="background:{COLOURS[cell.state]};color:{fg};text-align:center" '
                f'title="{e(title)}">{e(cell.state)}</td>')

    body = "".join(f"<tr><td class='mono'>{e(name)}</td>{''.join(td(cells[c]) for c in columns())}</tr>"
                   for name, cells in rows)
    return ('<h2 id="matrix">Scenarios x transports</h2><p class="muted">Each edge scenario over each ring '
            'transport: passed, failed, known issue, skipped (the target does not promise the transport; '
            'the reason on hover), not run (not selected), slow tier (run by <code>make test-slow</code>), '
            'n/a (the transport lacks a feature the scenario needs, or the scenario sets its own rings '
            'up). Hover a cell for the reason and the test.</p>'
            f'<table><tr><th>scenario</th>{head}</tr>{body}</table>')


def text(run: Run, width: int = 80) -> list[str]:
    """The matrix in at most `width` columns, one letter a cell (LETTERS); [] without scenarios."""
    rows = build(run)
    if not rows:
        return []
    name_w = min(max(len(n) for n, _ in rows), width - 5 * len(columns()) - 1)
    legend = ", ".join(f"{v} {k}" for k, v in LETTERS.items())
    out = ["", *textwrap.wrap(f"Scenarios x transports ({legend}):", width),
           f"{'scenario':<{name_w}} " + "".join(f"{SHORT.get(c, c[:4]):>5}" for c in columns())]
    for name, cells in rows:
        out.append(f"{name[:name_w]:<{name_w}} " + "".join(f"{LETTERS[cells[c].state]:>5}" for c in columns()))
    return out
