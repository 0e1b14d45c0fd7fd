"""Colours and the inline stylesheet of report.html (system fonts only, nothing fetched)."""

from __future__ import annotations

#: Verdict and status colours; the header band uses these exact values (tests look for them).
COLOURS = {
    "PASS": "#1a7f37",
    "FAIL": "#cf222e",
    "ERROR": "#a40e26",
    "TIMEOUT": "#bc4c00",
    "XPASS": "#d1242f",
    "XFAIL": "#8250df",
    "SKIP": "#6e7781",
    "INCOMPLETE": "#9a6700",
}


def colour(verdict: str) -> str:
    return COLOURS.get(verdict, "#57606a")


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;
       color:var(--fg); background:#fff; }
main { max-width: 1240px; margin: 0 auto; padding: 0 20px 40px; }
header.band { color:#fff; padding: 22px 28px 20px; }
header.band .row { max-width:1200px; margin:0 auto; display:flex; gap:28px; align-items:center; flex-wrap:wrap; }
.status { font-size:56px; font-weight:800; letter-spacing:2px; line-height:1; padding:10px 26px;
          border:4px solid rgba(255,255,255,.85); border-radius:14px; }
.title h1 { margin:0 0 4px; font-size:24px; }
.title div { opacity:.92; }
.counts { display:flex; gap:10px; flex-wrap:wrap; margin-left:auto; }
.count { background:#fff; color:var(--fg); border-radius:10px; padding:8px 14px; min-width:78px; text-align:center;
         box-shadow:0 1px 3px rgba(0,0,0,.25); }
.count b { display:block; font-size:28px; line-height:1.1; }
.count span { font-size:12px; font-weight:700; letter-spacing:1px; }
h2 { font-size:19px; margin:30px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(370px,1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:var(--bg); }
.card h3 { margin:0 0 6px; font-size:13px; text-transform:uppercase; letter-spacing:1px; color:var(--muted); }
dl { display:grid; grid-template-columns:max-content 1fr; gap:2px 12px; margin:0; }
dt { color:var(--muted); } dd { margin:0; overflow-wrap:anywhere; }
code, pre, .mono { font-family: ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
                   font-size:12.5px; }
pre { background:#0d1117; color:#e6edf3; padding:10px 12px; border-radius:6px; overflow:auto; max-height:480px;
      white-space:pre; margin:6px 0; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; vertical-align:top; padding:6px 8px; border-bottom:1px solid var(--line);
         overflow-wrap:anywhere; }
td pre { white-space:pre-wrap; overflow-wrap:anywhere; }
th { background:var(--bg); font-size:12px; text-transform:uppercase; letter-spacing:.5px; color:var(--muted); }
td.num, th.num { text-align:right; white-space:nowrap; font-variant-numeric: tabular-nums; }
.badge { display:inline-block; color:#fff; font-weight:700; font-size:12px; border-radius:12px; padding:2px 10px;
         min-width:64px; text-align:center; }
.chip { display:inline-block; border:1px solid var(--line); border-radius:12px; padding:1px 8px; margin:2px 4px 2px 0;
        font-size:12px; background:#fff; }
.chip.on { border-color:#1a7f37; color:#1a7f37; } .chip.off { color:var(--muted); }
.tag { display:inline-block; background:#fff8c5; border:1px solid #d4a72c; border-radius:6px; padding:0 6px;
       font-size:12px; margin-left:6px; }
.finding { color:#a40e26; font-weight:600; }
.reason { white-space:pre-wrap; overflow-wrap:anywhere; max-width:520px; }
details { margin:3px 0; } summary { cursor:pointer; color:#0969da; }
tr.bad td:first-child { border-left:4px solid #cf222e; }
.good { color:#1a7f37; font-weight:600; } .worse { color:#cf222e; font-weight:600; }
.charts { display:grid; grid-template-columns:repeat(auto-fill,minmax(540px,1fr)); gap:14px; }
.charts figure { margin:0; border:1px solid var(--line); border-radius:8px; padding:8px; text-align:center; }
.charts img { max-width:100%; }
.muted { color:var(--muted); }
.first-bad { font-size:17px; border-left:5px solid #cf222e; padding:8px 12px; background:#fff5f5; border-radius:4px; }
footer { margin-top:36px; color:var(--muted); font-size:12px; }
a { color:#0969da; }
"""
