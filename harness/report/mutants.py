"""The mutants section of report.html (a `fuse-harness mutate` run folder's mutants.json)."""

from __future__ import annotations

from harness.report.data import Run
from harness.report.markup import e, secs

#: outcome -> (label, css class): a survivor is what the reader looks for.
_OUTCOME = {"caught": ("caught", "good"), "survived": ("SURVIVED", "worse"), "timeout": ("timeout", "worse"),
            "discarded": ("discarded", "muted"), "error": ("error", "worse")}


#: The legend of a mutants.json without its own (written before harness.mutate.baseline.score_rule).
_RULE = "score = caught / (caught + survived + timeout); a mutant that does not compile is discarded and not counted."


def section(run: Run) -> str:
    """A table: mutant id, operator, file:line (function), the diff, caught by (test id) or
    SURVIVED, time; "" without mutants.json."""
    m = run.mutants
    if not m:
        return ""
    c = m.get("counts") or {}
    score = "n/a" if c.get("score") is None else f"{100 * c['score']:.0f}%"
    chips = "".join(f"<span class='chip'>{e(k)} {e(c.get(k, 0))}</span>"
                    for k in ("caught", "survived", "timeout", "discarded", "error"))
    rows = []
    for r in m.get("mutants") or []:
        label, cls = _OUTCOME.get(r.get("outcome"), (r.get("outcome"), ""))
        if r.get("outcome") == "timeout" and m.get("timeouts_count"):  # a hang past a clean suite's bound
            label, cls = "timeout (caught)", "good"
        by = r.get("caught_by") or r.get("note")
        where = f"{r.get('location')}" + (f" ({r['function']})" if r.get("function") else "")
        rows.append(f"<tr><td class='mono'>{e(r.get('id'))}</td><td class='mono'>{e(r.get('operator'))}</td>"
                    f"<td class='mono'>{e(where)}</td><td><pre>{e(r.get('diff'))}</pre></td>"
                    f"<td class='{cls}'><b>{e(label)}</b></td><td class='mono'>{e(by)}</td>"
                    f"<td class='num'>{e(secs(r.get('seconds')))}</td></tr>")
    scope = (m.get("scope") or {}).get("text") or (m.get("scope") or {}).get("kind")
    return (f'<h2 id="mutants">Mutants</h2><p>{e(m.get("target"))} · {e(scope)} · seed {e(m.get("seed"))}'
            f' · {e(m.get("candidates"))} candidates · stopped: {e(m.get("stopped"))}</p>'
            f"<p>{chips}<span class='chip'>score {e(score)}</span></p>"
            f"<p class='muted'>{e(m.get('score_rule') or _RULE)}</p>"
            "<table><tr><th>mutant</th><th>operator</th><th>file:line</th><th>diff</th><th>outcome</th>"
            f"<th>caught by / note</th><th class='num'>time</th></tr>{''.join(rows)}</table>")
