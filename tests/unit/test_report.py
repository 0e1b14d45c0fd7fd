"""harness.report: text table, 0-day summary and a self-contained, escaped report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.report import main, render_0day, render_html, render_text
from harness.report.data import load, relative, stats

DATA = Path(__file__).resolve().parent.parent / "data"
HOSTILE = '<script>alert("x")</script> & "quotes"'

BENCH = {
    "note": "fio 3.36, 4 vCPUs, KVM, 5 runs each",
    "workloads": {
        "seq-read-1M": {"unit": "MiB/s", "higher_is_better": True, "transports": {
            "legacy": [810.0, 822.5, 830.1, 799.9, 815.0], "iovec": [900.2, 910.0, 905.5, 890.0, 915.3],
            "bufpool": [1204.1, 1190.0, 1222.7, 1180.4, 1210.9], "zero-copy": [1502.0, 1490.5, 1530.8, 1475.0, 1511.2],
        }},
        "stat-latency": {"unit": "us", "higher_is_better": False, "transports": {
            "legacy": [30.0, 31.0, 29.5], "bufpool": [20.0, 21.0, 19.0], "zero-copy": [19.5, 20.5, 21.5],
        }},
    },
    "cpu_us_per_request": {"legacy": 9.1, "bufpool": 6.2, "zero-copy": 4.8},
}


def make_run(base: Path, *, bench: bool = True, extras: bool = True, failing: bool = True) -> Path:
    """A synthetic run folder as harness.plugin would leave it (plus optional JSON files)."""
    run = base / "007-v7.3-debug"
    (run / "dmesg").mkdir(parents=True)
    meta = {
        "harness_version": "0.1.0", "started": "2026-01-02T10:00:00Z", "finished": "2026-01-02T10:07:30Z",
        "status": "FAIL" if failing else "PASS", "argv": ["pytest", "tests/vm", "--profile", "debug"],
        "host": {"machine": "x86_64", "kernel": "6.1.0-18-amd64", "python": "3.11.2", "cpus": 8},
        "durations": {"source": 2.1, "build": 412.7, "boot": 3.4, "tests": 61.0},
        "kernel": {
            "target": "v7.3", "profile": "debug", "source": "git:https://git.kernel.org/torvalds/linux#v7.3",
            "source_identity": "v7.3 (0123456789ab)", "tree": "/cache/src/v7.3", "build_dir": "/cache/build/abc",
            "build_key": "abc123", "build_reused": False, "build_seconds": 412.7, "kernel_release": "7.3.0-rc2",
            "image": "/cache/build/abc/arch/x86/boot/bzImage", "compiler": "gcc (Debian 12.2.0-14) 12.2.0",
            "series": "fuse-uring-bufpool/v3", "series_identity": "3 patches, b4 7f3e2a",
            "abi": {"minor": 46, "generations": ["bufpool"], "transports": ["legacy", "iovec", "bufpool"]},
        },
        "vm": {"accel": "kvm", "accel_reason": "/dev/kvm is usable", "command": ["vng", "--run", "bzImage"],
               "boot_seconds": 3.4},
    }
    (run / "dmesg" / "test_teardown.log").write_text((DATA / "dmesg" / "kasan.log").read_text())
    (run / "dmesg" / "test_read_4k.log").write_text("[ 1.0] fuse: init\n")
    cases = [
        {"nodeid": "tests/vm/test_bufpool.py::test_read_4k[bufpool]", "verdict": "PASS", "seconds": 1.25,
         "harness_seconds": 0.4, "reason": "", "findings": [], "dmesg_file": "dmesg/test_read_4k.log",
         "vm_outcome": None,
         "subtests": [{"name": "bufpool.read_4k", "verdict": "PASS", "reason": ""},
                      {"name": "bufpool.read_1m", "verdict": "SKIP", "reason": "no huge pages"}]},
        {"nodeid": "tests/vm/test_zero_copy.py::test_splice[zero-copy]", "verdict": "SKIP", "seconds": 0.01,
         "reason": "target v7.3 does not promise transport zero-copy", "findings": [], "dmesg_file": None,
         "vm_outcome": None, "subtests": []},
    ]
    if failing:
        cases.insert(1, {
            "nodeid": "tests/vm/test_bufpool.py::test_teardown_under_load[bufpool-registered-with-a-long-id]",
            "verdict": "FAIL", "seconds": 12.5, "harness_seconds": 1.5, "reason": "guest server crashed " + HOSTILE,
            "findings": [{"kind": "KASAN", "line": "BUG: KASAN: slab-use-after-free in fuse_uring_req_end+0x2a/0x90",
                          "fingerprint": "KASAN:fuse_uring_req_end"}],
            "dmesg_file": "dmesg/test_teardown.log", "vm_outcome": None,
            "subtests": [{"name": "registered.teardown", "verdict": "FAIL", "reason": HOSTILE}]})
    counts: dict[str, int] = {}
    for c in cases:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    (run / "metadata.json").write_text(json.dumps(meta))
    (run / "summary.json").write_text(json.dumps({"counts": counts, "exitstatus": 1 if failing else 0,
                                                  "cases": cases}))
    (run / "kernel.config").write_text("CONFIG_FUSE_FS=y\nCONFIG_FUSE_IO_URING=y\nCONFIG_IO_URING=y\n"
                                       "CONFIG_KASAN=y\n# CONFIG_KFENCE is not set\nCONFIG_PROVE_LOCKING=y\n")
    (run / "reproduce.sh").write_text("#!/bin/sh\n# Reproduce this fuse-harness run.\nset -e\ncd /src/fuse-harness\n"
                                      ".venv/bin/fuse-harness build --target v7.3 --profile debug\n"
                                      ".venv/bin/python -m pytest tests/vm --target v7.3 --profile debug\n")
    (run / "console-1.log").write_text("boot\n")
    if bench:
        (run / "bench.json").write_text(json.dumps(BENCH))
    if extras:
        (run / "compare.json").write_text(json.dumps({
            "base": "results/006-v7.3-debug", "head": str(run),
            "new_pass": [{"nodeid": "tests/vm/test_iovec.py::test_write", "base": "FAIL", "head": "PASS"}],
            "regressions": [{"nodeid": cases[1]["nodeid"], "base": "PASS", "head": "FAIL", "reason": HOSTILE}],
            "new_findings": ["KASAN:fuse_uring_req_end"],
            "timing": [{"nodeid": cases[0]["nodeid"], "base": 1.0, "head": 1.25}]}))
        (run / "bisect.json").write_text(json.dumps({
            "good": "v7.2", "bad": "fuse-uring-bufpool/v3", "test": cases[1]["nodeid"],
            "first_bad": {"commit": "7f3e2a9c0d1e4b5a", "subject": "fuse: add buffer pool for io-uring"},
            "steps": [{"commit": "1111aaaa", "verdict": "PASS", "seconds": 70.0},
                      {"commit": "7f3e2a9c0d1e4b5a", "verdict": "FAIL", "seconds": 81.5}],
            "reproducer": "fuse-harness run --series fuse-uring-bufpool/v3 -k teardown"}))
    return run


@pytest.fixture
def known(tmp_path: Path) -> Path:
    path = tmp_path / "known-issues.yaml"
    path.write_text('- id: uring-uaf-teardown\n  test: "tests/vm/test_bufpool.py::test_teardown*"\n'
                    '  kernel: "7.3.*"\n  reason: "UAF in fuse_uring_req_end on abort <b>"\n'
                    '  reproducer: "fuse-harness run -k teardown"\n'
                    '- id: not-this-kernel\n  test: "*"\n  kernel: "6.*"\n  reason: old\n')
    return path


def test_text_table(tmp_path: Path, known: Path) -> None:
    text = render_text(make_run(tmp_path), known)
    lines = text.splitlines()
    assert all(len(x) <= 80 for x in lines), [x for x in lines if len(x) > 80]
    assert text.isascii()
    assert lines[0] == "fuse-harness 0.1.0 run 007-v7.3-debug: FAIL"
    assert "kernel:   7.3.0-rc2 (v7.3/debug)" in lines
    assert "series:   fuse-uring-bufpool/v3 (3 patches, b4 7f3e2a)" in lines
    assert any(x.startswith("config:   debug profile; FUSE_FS=y") and "KASAN=y" in x for x in lines)
    assert "results:  PASS 1, FAIL 1, SKIP 1" in lines
    assert "finding: KASAN:fuse_uring_req_end" in text
    assert "known issue: uring-uaf-teardown" in text
    assert "not-this-kernel" not in text
    assert "test_read_4k" not in text  # passing tests are not listed
    row = next(x for x in lines if x.startswith("seq-read-1M") and "zero-copy" in x)
    assert re.search(r"1502\s+2%\s+1\.84\s+1\.25$", row), row  # (1530.8-1475)/2/1502
    lat = next(x for x in lines if x.startswith("stat-latency") and "bufpool" in x)
    assert re.search(r"1\.50\s+1\.00$", lat), lat  # lower is better: 30/20
    assert "First bad commit: 7f3e2a9c0d1e fuse: add buffer pool for io-uring" in lines


def test_text_without_optional_files(tmp_path: Path) -> None:
    text = render_text(make_run(tmp_path, bench=False, extras=False, failing=False), tmp_path / "none.yaml")
    assert "run 007-v7.3-debug: PASS" in text
    assert "Benchmarks" not in text and "Not passing" in text  # the SKIP is still listed
    assert "First bad" not in text


def test_0day_summary(tmp_path: Path, known: Path) -> None:
    run = make_run(tmp_path)
    text = render_0day(run, known)
    lines = text.splitlines()
    # only the (long, temporary) path of kernel.config may exceed 80 columns: paths are never broken
    assert all(len(x) <= 80 for x in lines if str(run) not in x) and text.isascii()
    assert "tree:     git:https://git.kernel.org/torvalds/linux#v7.3 (v7.3 (0123456789ab))" in lines
    assert f"config:   {run / 'kernel.config'}" in text
    assert "compiler: gcc (Debian 12.2.0-14) 12.2.0" in lines
    i = lines.index("reproduce:")
    assert lines[i + 1 : i + 4] == ["        # Reproduce this fuse-harness run.", "        cd /src/fuse-harness",
                                    "        .venv/bin/fuse-harness build --target v7.3 --profile debug"]
    assert "| Reported-by: fuse-harness <REPLACE-WITH-YOUR-ADDRESS>" in lines
    assert "test harness" in text
    assert "[   20.100002] Read of size 8 at addr ffff888003c4d6a8 by task kworker/0:1/33" in lines
    assert "commit:   7f3e2a9c0d1e (\"fuse: add buffer pool for io-uring\")" in lines


def _attr_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", html, re.I)


def test_html_self_contained_and_escaped(tmp_path: Path, known: Path) -> None:
    out = render_html(make_run(tmp_path), known)
    assert out.name == "report.html"
    html = out.read_text()
    urls = _attr_urls(html)
    assert not [u for u in urls if re.match(r"(https?:)?//", u)], urls
    assert not re.search(r"<script|<link|@import|url\(", html, re.I)
    images = [u for u in urls if u.startswith("data:")]
    # ratio grids vs legacy and vs bufpool, two workloads, CPU cost
    assert len(images) == 5 and all(u.startswith("data:image/png;base64,") for u in images)
    assert 'alt="vs legacy"' in html and 'alt="vs bufpool"' in html
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    assert "UAF in fuse_uring_req_end on abort &lt;b&gt;" in html
    # the source URL of the kernel is shown as text, not as a link
    assert "git:https://git.kernel.org/torvalds/linux#v7.3" in html


def test_html_sections(tmp_path: Path, known: Path) -> None:
    html = render_html(make_run(tmp_path), known).read_text()
    for anchor in ("tested", "results", "known", "compare", "bisect", "bench", "reproduce"):
        assert f'id="{anchor}"' in html, anchor
    assert '<div class="status">FAIL</div>' in html
    assert 'background:#cf222e"><div class="row">' in html  # FAIL red header band
    assert "7.3.0-rc2" in html and "gcc (Debian 12.2.0-14)" in html and "/dev/kvm is usable" in html
    assert "FUSE_IO_URING=y" in html and "KFENCE=n" in html
    assert "<details" in html and "Read of size 8 at addr" in html  # the KASAN excerpt, collapsible
    assert "2 guest subtests" in html and "bufpool.read_1m" in html
    assert 'href="dmesg/test_teardown.log"' in html and 'href="reproduce.sh"' in html
    assert "known: uring-uaf-teardown" in html
    assert "first bad commit: <code>7f3e2a9c0d1e4b5a</code>" in html
    assert "1.84×" in html  # zero-copy vs legacy on seq-read
    # failures come first in the results table
    assert html.index("test_teardown_under_load") < html.index("test_read_4k[bufpool]</td>")


def test_html_optional_sections_absent(tmp_path: Path) -> None:
    run = make_run(tmp_path, bench=False, extras=False, failing=False)
    html = render_html(run, tmp_path / "none.yaml").read_text()
    for anchor in ("known", "compare", "bisect", "bench"):
        assert f'id="{anchor}"' not in html, anchor
    assert "data:image" not in html
    assert '<div class="status">PASS</div>' in html and "background:#1a7f37" in html


def test_incomplete_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, bench=False, extras=False)
    (run / "summary.json").unlink()
    meta = json.loads((run / "metadata.json").read_text())
    (run / "metadata.json").write_text(json.dumps({**meta, "status": "RUNNING"}))
    html = render_html(run, tmp_path / "none.yaml").read_text()
    assert '<div class="status">INCOMPLETE</div>' in html and "did not finish" in html
    assert "INCOMPLETE" in render_text(run, tmp_path / "none.yaml").splitlines()[0]


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="metadata.json"):
        load(tmp_path)
    assert main([str(tmp_path), "--text"]) == 4


def test_bad_known_issues(tmp_path: Path) -> None:
    bad = tmp_path / "k.yaml"
    bad.write_text("- id: x\n  test: '*'\n  colour: red\n")
    with pytest.raises(UserError, match="colour"):
        render_text(make_run(tmp_path), bad)


def test_main_formats(tmp_path: Path, known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, bench=False)
    assert main([str(run), "--text", "--known-issues", str(known)]) == 0
    assert "run 007-v7.3-debug: FAIL" in capsys.readouterr().out
    assert main([str(run), "--0day", "--known-issues", str(known)]) == 0
    assert "reproduce:" in capsys.readouterr().out
    assert main([str(run), "--known-issues", str(known)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")


def test_stats_and_ratio() -> None:
    s = stats([3.0, 1.0, 2.0, 10.0])
    assert s is not None and (s.n, s.median, s.low, s.high) == (4, 2.5, 1.0, 10.0)
    assert stats([]) is None and stats([5.0]).q1 == 5.0
    assert relative(200.0, 100.0, True) == 2.0 and relative(50.0, 100.0, False) == 2.0
    assert relative(1.0, 0.0, True) is None


def test_text_names_each_known_issue_with_its_reproducer(tmp_path: Path) -> None:
    """A posted series' run reads as a reply: every expected failure's issue, why, how to reproduce."""
    run = make_run(tmp_path, bench=False, extras=False, failing=False)
    summary = json.loads((run / "summary.json").read_text())
    summary["cases"].append({"nodeid": "tests/vm/test_edge_kmbuf.py::test_register_validation", "verdict": "XFAIL",
                             "seconds": 3.0, "reason": "", "findings": [], "subtests": []})
    (run / "summary.json").write_text(json.dumps(summary))
    meta = json.loads((run / "metadata.json").read_text())
    meta["kernel"].update(target="kmbuf-v4", kernel_release="7.2.13-gb1182041ee81")
    (run / "metadata.json").write_text(json.dumps(meta))
    known = tmp_path / "k.yaml"
    known.write_text("- id: kmbuf-v4-unknown-init-flags-accepted\n  test: 'tests/vm/test_edge_kmbuf.py::*'\n"
                     "  kernel: '7.2'\n  target: kmbuf-v4\n  reason: REGISTER accepts init.flags bits it does"
                     " not know\n  reproducer: python3 -m guest edge kmbuf-validation\n"
                     "- id: other-target\n  test: '*'\n  kernel: '7.2'\n  target: v7.2\n  reason: no\n")
    lines = render_text(run, known).splitlines()
    i = lines.index("Known issues (expected failures, each with its reproducer):")
    assert lines[i + 2:i + 6] == ["[kmbuf-v4-unknown-init-flags-accepted]",
                                  "  in tests/vm/test_edge_kmbuf.py::test_register_validation",
                                  "  REGISTER accepts init.flags bits it does not know",
                                  "  reproduce: python3 -m guest edge kmbuf-validation"]
    assert "other-target" not in "\n".join(lines)


def test_kmbuf_v4_review_text_names_the_header_prep_finding_once(tmp_path: Path) -> None:
    """issue 28, with the shipped known-issues.yaml: a kmbuf-v4 run whose bad-header-index test and
    buffer-table tests (unregister case) are expected failures names one finding, in all three
    tests, with its reason once; nothing claims the replace case or an unkillable client."""
    from harness.known_issues import PATH
    from harness.report.sections import known_issues

    run = make_run(tmp_path, bench=False, extras=False, failing=False)
    summary = json.loads((run / "summary.json").read_text())
    ids = ["tests/vm/test_edge_kmbuf.py::test_bad_header_index_does_not_strand",
           "tests/vm/test_edge_hostile.py::test_buffer_table_tampered_in_flight[kmbuf]",
           "tests/vm/test_edge_hostile.py::test_buffer_table_tampered_in_flight[kmbuf-zero-copy]"]
    summary["cases"] += [{"nodeid": n, "verdict": "XFAIL", "seconds": 30.0, "reason": "", "findings": [],
                          "subtests": []} for n in ids]
    summary["cases"].append({"nodeid": "tests/vm/test_edge_hostile.py::test_buffer_table_tampered_in_flight"
                             "[zero-copy]", "verdict": "PASS", "seconds": 30.0, "reason": "", "findings": [],
                             "subtests": []})
    (run / "summary.json").write_text(json.dumps(summary))
    meta = json.loads((run / "metadata.json").read_text())
    meta["kernel"].update(target="kmbuf-v4", kernel_release="7.2.13-gb1182041ee81")
    (run / "metadata.json").write_text(json.dumps(meta))
    text = render_text(run, PATH)
    section = text[text.index("Known issues (expected failures"):]
    assert section.count("[kmbuf-v4-") == 1 and "[kmbuf-v4-header-prep-failure-strands-request]" in section
    shown = [ln.strip() for ln in section.splitlines() if ln.startswith("  in ")]
    assert len(shown) == 3 and all(a.endswith(n.rsplit("/", 1)[1]) for a, n in zip(shown, ids, strict=True))
    flat = " ".join(section.split())
    assert "unkillable" not in flat and "is not part of this finding" in flat
    html = known_issues(load(run, PATH))
    assert "test_bad_header_index_does_not_strand<br>tests/vm/test_edge_hostile.py" in html


def test_html_says_where_the_time_went(tmp_path: Path, known: Path) -> None:
    from harness.report.data import load
    from harness.report.sections import timings

    run = load(make_run(tmp_path), known)
    html = timings(run)
    assert "Where the time went" in html
    slowest = max(run.cases, key=lambda c: float(c.get("seconds") or 0))
    assert html.index(slowest["nodeid"]) < min(html.index(c["nodeid"]) for c in run.cases if c is not slowest)
    assert "%</td>" in html


def test_harness_overhead_is_named_in_both_reports(tmp_path: Path, known: Path) -> None:
    from harness.report.data import harness_overhead, load
    from harness.report.sections import timings

    folder = make_run(tmp_path)
    run = load(folder, known)
    line = "harness per VM test: mean 0.95s, max 1.50s (test_teardown_under_load[bufpool-registered-with-a-long-id])"
    assert harness_overhead(run.cases) == line
    assert line in " ".join(render_text(folder, known).split()) and "<td class='num'>1.5s</td>" in timings(run)
    assert harness_overhead([{"nodeid": "a::b", "seconds": 1.0}]) == ""



def test_a_run_on_a_kept_guest_says_it_did_not_boot(tmp_path: Path, known: Path) -> None:
    folder = make_run(tmp_path)
    meta = json.loads((folder / "metadata.json").read_text())
    assert "boot 3.4s" in render_text(folder, known)
    meta["vm"].update(adopted=True, boot_seconds=None)
    (folder / "metadata.json").write_text(json.dumps(meta))
    text = render_text(folder, known)
    assert "a kept guest (no boot)" in text and "boot 0" not in text
    assert "none: a kept guest" in render_html(folder, known).read_text()


def test_a_run_stopped_by_its_series_names_the_series_and_the_error(tmp_path: Path) -> None:
    """A series that did not apply: no kernel, no tests; the text names the series the command
    asked for and why the run stopped (it said 'series: none (base kernel)' before)."""
    run = tmp_path / "002-v7.2-default"
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps({
        "argv": ["pytest", "tests/vm", "--target", "v7.2", "--profile", "default", "--series", "mbox:x/posted-v4.mbx"],
        "error": 'series posted-v4/local: patch 01/25 "io_uring/kbuf: x" does not apply: io_uring/kbuf.c hunk #1',
        "status": "FAIL"}))
    (run / "summary.json").write_text(json.dumps({"cases": [], "exitstatus": 4}))
    text = render_text(run, tmp_path / "none.yaml")
    assert "kernel:   ? (v7.2/default)" in text
    assert "series:   mbox:x/posted-v4.mbx (not applied" in text and "none (base kernel)" not in text
    assert "Stopped before any test:" in text and "patch 01/25" in text and "io_uring/kbuf.c hunk #1" in text
