"""harness.bench.compare and `fuse-harness compare` on two bench run folders (no VM)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.bench import model as M
from harness.bench.compare import compare_bench, render
from harness.compare import compare
from harness.report import render_html

CALM = {"steal": 0.2, "other": 1.0, "vm": 95.0}


def bench(zero_copy: list[float], legacy: list[float] | None = None, load: dict | None = CALM) -> dict:
    """seq-read-1M only: legacy, bufpool (always 1.1x legacy) and zero-copy, one sample per round."""
    legacy = legacy or [10.0] * len(zero_copy)
    s = M.BenchSettings(size="8M", runtime=2, repeat=len(zero_copy), transports=("legacy", "bufpool", "zero-copy"))
    r = M.BenchResult(s, s.transports, "note")
    for rnd, (lv, zv) in enumerate(zip(legacy, zero_copy, strict=True), start=1):
        r.add("seq-read-1M", "legacy", lv, rnd, load)
        r.add("seq-read-1M", "bufpool", lv * 1.1, rnd, load)
        r.add("seq-read-1M", "zero-copy", zv, rnd, load)
    return r.to_json()


def test_same_ratios_on_a_slower_host_do_not_move():
    base = bench([12.0, 13.0, 12.5])
    head = bench([6.0, 6.5, 6.2], legacy=[5.0, 5.0, 5.0])  # everything half as fast: same ratios
    got = compare_bench(base, head)
    assert got["compared"] == 2 and got["moved"] == 0
    zc = next(r for r in got["rows"] if r["transport"] == "zero-copy")
    assert zc["base_range"] == [1.2, 1.3] and zc["head_vs"] == 1.24 and zc["moved"] == ""


def test_a_ratio_outside_the_base_range_moves():
    got = compare_bench(bench([12.0, 13.0, 12.5]), bench([15.0, 15.5, 14.8]))
    zc = next(r for r in got["rows"] if r["transport"] == "zero-copy")
    assert zc["moved"] == "up" and got["moved"] == 1
    assert compare_bench(bench([12.0, 13.0]), bench([9.0, 9.5]))["rows"][-1]["moved"] == "down"
    text = "\n".join(render(got))
    assert "1 of 2 moved" in text and "UP" in text and "1.25 (1.20-1.30)" in text


def test_a_noisy_run_is_said_to_be_one():
    busy = {"steal": 12.0, "other": 3.0, "vm": 80.0}
    quiet = compare_bench(bench([12.0, 13.0, 12.5]), bench([15.0, 15.5, 14.8]))
    assert quiet["noisy"] == [] and "NOTE" not in "\n".join(render(quiet))
    got = compare_bench(bench([12.0, 13.0, 12.5]), bench([15.0, 15.5, 14.8], load=busy))
    assert got["noisy"] == ["head"] and got["moved"] == 1
    assert "NOTE: the head run had a noisy host" in "\n".join(render(got))
    old = compare_bench(bench([12.0, 13.0, 12.5], load=None), bench([15.0, 15.5, 14.8]))
    assert "not measured in both runs" in "\n".join(render(old))


def test_one_round_has_no_range_to_judge():
    got = compare_bench(bench([12.0]), bench([20.0]))
    assert got["compared"] == 0 and all(r["moved"] is None for r in got["rows"])


def test_compare_cli_on_two_bench_folders(tmp_path: Path, capsys):
    from harness.cli import main

    for name, zc in (("a", [12.0, 13.0, 12.5]), ("b", [15.0, 15.5, 14.8])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench.json").write_text(json.dumps(bench(zc)))
        (tmp_path / name / "metadata.json").write_text(json.dumps({"kernel": {"target": "v7.3"}, "status": "PASS"}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0  # news, not a failure
    out = capsys.readouterr().out
    assert "1 of 2 moved outside the base run's range" in out and "regressions" not in out
    result = compare(tmp_path / "a", tmp_path / "b")
    assert result["bench"]["moved"] == 1 and result["tests_compared"] is False
    html = render_html(tmp_path / "b", tmp_path / "none.yaml").read_text()
    assert "Benchmark ratios vs legacy" in html and ">up<" in html
