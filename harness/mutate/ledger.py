"""What finished mutants said: resume a run, order the tests, classify an outcome.

A ledger (JSON, one per scope/seed/-k/tree head in the workspace's ledgers/) maps a mutant id
to its record; a rerun with the same key skips the mutants it holds. Records of every ledger
in the folder also order the next mutant's tests (`catchers`).

A record: {"id", "operator", "file", "line", "location" ("file:line"), "function", "diff",
"outcome" (caught | survived | discarded | timeout | error), "caught_by" (pytest node id or
null), "note", "seconds" (build + tests), "build_seconds", "run" (the mutant's run folder)}.
"error" records (the suite did not run) are not kept, so a rerun tries them again.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from pathlib import Path

from harness.cache import key_of, write_json_atomic
from harness.mutate.operators import Mutant

CAUGHT, SURVIVED, DISCARDED, TIMEOUT, ERROR = "caught", "survived", "discarded", "timeout", "error"
OUTCOMES = (CAUGHT, SURVIVED, DISCARDED, TIMEOUT, ERROR)
#: Test verdicts (harness.results.model.Verdict) that mean the suite noticed the mutant.
CATCHING = ("FAIL", "ERROR", "TIMEOUT", "XPASS")


class Ledger:
    """The finished mutants of one scope, seed, -k and tree head."""

    def __init__(self, folder: Path, key_items: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / f"{key_of(key_items)}.json"
        self.key_items = key_items
        try:
            self.records: dict[str, dict] = json.loads(self.path.read_text()).get("records", {})
        except (OSError, ValueError):
            self.records = {}

    def add(self, record: dict) -> None:
        if record["outcome"] == ERROR:
            return
        self.records[record["id"]] = record
        write_json_atomic(self.path, {"key": self.key_items, "records": self.records})

    def history(self) -> list[dict]:
        """Every record of every ledger in the folder (this one's as they are now)."""
        out = list(self.records.values())
        for path in sorted(self.folder.glob("*.json")):
            if path != self.path:
                try:
                    out += list(json.loads(path.read_text()).get("records", {}).values())
                except (OSError, ValueError):
                    continue
        return out


def catchers(history: list[dict], mutant: Mutant) -> dict[str, list[int]]:
    """{test node id: [tier, catches]} for `mutant` (harness.mutate.order runs them first):
    tier 0 for a test that caught earlier mutants of the same function (catches: how many),
    1 for one that caught mutants of the same file only. Catches elsewhere do not count. Only
    the ledgers' records are used (no kernel coverage): cheap, and it learns as a run goes."""
    tiers: dict[str, dict[int, int]] = {}
    for r in history:
        test = r.get("caught_by")
        if r.get("outcome") != CAUGHT or not test or r.get("file") != mutant.file:
            continue
        tier = 0 if mutant.function and r.get("function") == mutant.function else 1
        counts = tiers.setdefault(test, {})
        counts[tier] = counts.get(tier, 0) + 1
    return {t: [min(c), c[min(c)]] for t, c in sorted(tiers.items())}


def clean_seconds(summary: dict | None) -> dict[str, float]:
    """{node id: seconds} of the tests of a session's summary.json that passed, skipped or
    failed as a known issue expects (PASS, SKIP, XFAIL): durations of a clean run, for the
    order. A test that failed took its failure's time, which says nothing of its clean one."""
    return {c["nodeid"]: float(c.get("seconds") or 0.0) for c in (summary or {}).get("cases", [])
            if c.get("verdict") in ("PASS", "SKIP", "XFAIL") and c.get("nodeid")}


def outcome_of(summary: dict | None, returncode: int | None, timed_out: bool) -> tuple[str, str | None, str]:
    """(outcome, catching test id, note) of one mutant's test session: caught when a test
    failed (its first failing one, in completion order), timeout when the session hit its
    bound first, survived when the session ended with exit 0 and a passing test, else error."""
    cases = (summary or {}).get("cases", [])
    bad = [c for c in cases if c.get("verdict") in CATCHING]
    if bad:
        return CAUGHT, bad[0].get("nodeid"), f"{bad[0].get('verdict')}: {str(bad[0].get('reason') or '')[:200]}"
    if timed_out:
        return TIMEOUT, None, "the test session did not end within the per-mutant bound"
    passed = sum(c.get("verdict") == "PASS" for c in cases)
    if summary is not None and returncode == 0 and passed:
        return SURVIVED, None, f"{passed} tests passed"
    if summary is not None and not cases:
        return ERROR, None, f"no test ran (pytest exit {returncode}): does -k select any?"
    return ERROR, None, f"pytest exit {returncode} without a failing test (no kernel or guest?)"


def diff_of(text: str, mutant: Mutant) -> str:
    """The mutant as a unified diff (one line of context) of its file."""
    before = text.splitlines(keepends=True)
    after = mutant.apply(text).splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"a/{mutant.file}", f"b/{mutant.file}", n=1))


def counts(records: list[dict], timeouts_caught: bool | None = False) -> dict:
    """Outcome counts and the score: caught / (caught + survived + timeout), None without any;
    with `timeouts_caught` (a clean baseline passed well within the bound:
    harness.mutate.baseline.timeouts_count) a timeout counts as caught too."""
    c = Counter(r["outcome"] for r in records)
    judged = c[CAUGHT] + c[SURVIVED] + c[TIMEOUT]
    found = c[CAUGHT] + (c[TIMEOUT] if timeouts_caught else 0)
    return {**{o: c[o] for o in OUTCOMES}, "score": round(found / judged, 3) if judged else None}
