"""harness.bench.compare and `fuse-harness compare` on two bench run folders (no VM)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.bench import model as M
from harness.bench.compare import compare_bench, rank_p, render, smallest_p
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


BASE = [12.0, 13.0, 12.5, 12.2, 12.8]  # zero-copy 1.20-1.30x legacy over 5 rounds


def test_same_ratios_on_a_slower_host_do_not_move():
    head = bench([6.0, 6.5, 6.2, 6.1, 6.4], legacy=[5.0] * 5)  # everything half as fast: same ratios
    got = compare_bench(bench(BASE), head)
    assert got["compared"] == 2 and got["moved"] == 0
    zc = next(r for r in got["rows"] if r["transport"] == "zero-copy")
    assert zc["base_range"] == [1.2, 1.3] and zc["head_vs"] == 1.24 and zc["moved"] == "" and zc["p"] > 0.5


def test_a_ratio_outside_the_base_range_moves():
    got = compare_bench(bench(BASE), bench([15.0, 15.5, 14.8, 15.2, 14.9]))
    zc = next(r for r in got["rows"] if r["transport"] == "zero-copy")
    assert zc["moved"] == "up" and got["moved"] == 1 and zc["p"] == 0.0079  # 2 / C(10, 5)
    assert compare_bench(bench(BASE), bench([9.0, 9.5, 9.2, 9.4, 9.1]))["rows"][-1]["moved"] == "down"
    text = "\n".join(render(got))
    assert "1 of 2 moved" in text and "about 0.1" in text and "UP" in text and "1.25 (1.20-1.30)" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_outside_the_range_by_chance_is_not_a_move():
    # one round of five happens to sit low: the head median is just below the base range, the rounds overlap
    got = compare_bench(bench(BASE), bench([11.8, 12.9, 11.9, 12.6, 11.95]))
    zc = next(r for r in got["rows"] if r["transport"] == "zero-copy")
    assert zc["outside"] and zc["p"] > 0.05 and zc["moved"] == ""


def test_rank_test():
    assert rank_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == 2 / 252
    assert rank_p([1, 2, 3], [1, 2, 3]) == 1.0 and rank_p([1.0], [2.0, 3.0]) is None
    assert smallest_p(3, 3) == 0.1  # three rounds a side can never reach p < 0.05
    far = rank_p(list(range(10)), [x + 100 for x in range(10)])  # 20 values: the normal approximation
    assert far is not None and far < 0.001


def test_a_noisy_run_is_said_to_be_one():
    busy = {"steal": 12.0, "other": 3.0, "vm": 80.0}
    quiet = compare_bench(bench(BASE), bench([15.0, 15.5, 14.8, 15.2, 14.9]))
    assert quiet["noisy"] == [] and "NOTE" not in "\n".join(render(quiet))
    got = compare_bench(bench(BASE), bench([15.0, 15.5, 14.8, 15.2, 14.9], load=busy))
    assert got["noisy"] == ["head"] and got["moved"] == 1
    assert "NOTE: the head run had a noisy host" in "\n".join(render(got))
    old = compare_bench(bench(BASE, load=None), bench([15.0, 15.5, 14.8, 15.2, 14.9]))
    assert "not measured in both runs" in "\n".join(render(old))


def test_too_few_rounds_to_judge():
    got = compare_bench(bench([12.0, 13.0, 12.5]), bench([20.0, 21.0, 20.5]))  # p >= 0.1 whatever happens
    assert got["compared"] == 0 and all(r["moved"] is None for r in got["rows"])
    assert "2 not judged" in "\n".join(render(got))
    assert compare_bench(bench([12.0]), bench([20.0]))["compared"] == 0


def test_compare_cli_on_two_bench_folders(tmp_path: Path, capsys):
    from harness.cli import main

    for name, zc in (("a", BASE), ("b", [15.0, 15.5, 14.8, 15.2, 14.9])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench.json").write_text(json.dumps(bench(zc)))
        (tmp_path / name / "metadata.json").write_text(json.dumps({"kernel": {"target": "v7.3"}, "status": "PASS"}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0  # news, not a failure
    out = capsys.readouterr().out
    assert "1 of 2 moved (head median outside the base run's range" in out and "regressions" not in out
    result = compare(tmp_path / "a", tmp_path / "b")
    assert result["bench"]["moved"] == 1 and result["tests_compared"] is False
    html = render_html(tmp_path / "b", tmp_path / "none.yaml").read_text()
    assert "Benchmark ratios vs legacy" in html and ">up<" in html


def test_per_cpu_rows_are_compared_too():
    got = compare_bench(bench(BASE), bench([15.0, 15.5, 14.8, 15.2, 14.9]))
    cpu = got["per_cpu"]
    assert cpu["compared"] == 2 and cpu["moved"] == 1  # every sample had the same VM share: same verdicts
    text = "\n".join(render(got))
    assert "per host CPU the VM got" in text
    assert compare_bench(bench(BASE, load=None), bench(BASE, load=None))["per_cpu"]["rows"] == []
