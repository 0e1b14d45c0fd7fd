"""Small HTML helpers shared by the report sections; every text goes through e()."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from harness.log import fmt_duration
from harness.report.data import Run
from harness.report.style import colour


def e(value: Any) -> str:
    """Escaped text; None becomes an em dash."""
    return "—" if value is None or value == "" else escape(str(value))


def badge(verdict: str) -> str:
    return f'<span class="badge" style="background:{colour(verdict)}">{e(verdict)}</span>'


def link(run: Run, rel: str, label: str | None = None) -> str:
    """A relative link to a file of the run folder (plain text when the file is missing)."""
    if not (run.path / rel).exists():
        return f'<span class="mono">{e(label or rel)}</span>'
    return f'<a class="mono" href="{escape(quote(rel))}">{e(label or rel)}</a>'


def dl(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{e(k)}</dt><dd>{v if isinstance(v, Raw) else e(v)}</dd>" for k, v in items if v not in
                   (None, "", [], {}))
    return f"<dl>{rows}</dl>"


class Raw(str):
    """Already-escaped HTML for dl()."""


def secs(value: Any) -> str | None:
    return fmt_duration(float(value)) if isinstance(value, (int, float)) else None
