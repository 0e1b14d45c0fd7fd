"""`fuse-harness mutate`: bad input is one clear line and exit 4 (no source, no build); the
report section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli


@pytest.mark.parametrize(("argv", "message"), [
    (["--function", "fuse_uring_commit"], "--function needs --file"),
    (["--file", "../dev_uring.c"], "inside the kernel tree"),
    (["--file", "/abs/dev_uring.c"], "inside the kernel tree"),
    (["--file", "fs/fuse/Makefile"], "not a C file"),
    (["--file", "fs/fuse/dev_uring.c", "--function", "a b"], "not a C function name"),
    (["--file", "fs/fuse/dev_uring.c", "--series", "mbox:x.mbx"], "two scopes"),
    (["--file", "fs/fuse/dev_uring.c", "--max", "0"], "--max 0: must be at least 1"),
    (["--file", "fs/fuse/dev_uring.c", "--max", "ten"], "--max 'ten': not a whole number"),
    (["--file", "fs/fuse/dev_uring.c", "--seed", "-1"], "--seed -1"),
    (["--file", "fs/fuse/dev_uring.c", "--time-budget", "0"], "--time-budget 0"),
    (["--file", "fs/fuse/dev_uring.c", "--mutant-timeout", "soon"], "--mutant-timeout"),
    (["--file", "fs/fuse/dev_uring.c", "-n", "x"], "--jobs 'x'"),
    (["--target", "v7.3"], "has no series"),
    (["--target", "no-such-target", "--file", "fs/fuse/dev_uring.c"], "unknown target"),
    (["--target", "v7.3", "--file", "fs/fuse/dev_uring.c", "--source", "path:/nonexistent/tree"], "does not exist"),
])
def test_bad_input_is_exit_4_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    assert cli.main(["mutate", *argv]) == 4
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "mutate").exists()  # nothing prepared for bad input


def test_command_line_repeats_the_options() -> None:
    import argparse

    from harness.mutate.cli import add_arguments, command_line

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--target", "v7.3", "--file", "fs/fuse/dev_uring.c", "--function", "f", "-k", "bufpool"])
    assert command_line(args) == ["fuse-harness", "mutate", "--target", "v7.3", "--profile", "default", "--file",
                                  "fs/fuse/dev_uring.c", "--function", "f", "--max", "30", "--seed", "1",
                                  "-k", "bufpool"]
    args = p.parse_args(["--target", "v7.3", "--file", "f.c", "--mutant-timeout", "600", "--no-baseline"])
    assert command_line(args)[-3:] == ["--mutant-timeout", "600", "--no-baseline"]


def test_report_has_a_mutants_table(tmp_path: Path) -> None:
    from harness.report import render_html

    (tmp_path / "metadata.json").write_text(json.dumps({"status": "DONE", "argv": ["fuse-harness", "mutate"]}))
    (tmp_path / "mutants.json").write_text(json.dumps({
        "target": "v7.3", "scope": {"kind": "file", "text": "fs/fuse/dev_uring.c function fuse_uring_commit"},
        "seed": 1, "candidates": 4, "stopped": "done",
        "counts": {"caught": 1, "survived": 1, "timeout": 0, "discarded": 0, "error": 0, "score": 0.5},
        "mutants": [
            {"id": "51da3d28ba", "operator": "call-drop", "location": "fs/fuse/dev_uring.c:1172",
             "function": "fuse_uring_commit", "diff": "-\tfuse_uring_req_end(ent, req, err, issue_flags);\n+\t;\n",
             "outcome": "caught", "caught_by": "tests/vm/test_transports.py::test_io[bufpool]", "seconds": 190.0},
            {"id": "c52f06319f", "operator": "cond-negate", "location": "fs/fuse/dev_uring.c:1165",
             "function": "fuse_uring_commit", "diff": "-\tif (err) {\n+\tif (!(err)) {\n", "outcome": "survived",
             "caught_by": None, "note": "40 tests passed", "seconds": 330.5}]}))
    html = render_html(tmp_path).read_text()
    assert '<h2 id="mutants">Mutants</h2>' in html and "SURVIVED" in html and "score 50%" in html
    assert "tests/vm/test_transports.py::test_io[bufpool]" in html and "fuse_uring_req_end(ent, req, err" in html
    assert "score = caught / (caught + survived + timeout)" in html  # a mutants.json without its own legend


def test_report_says_a_timeout_counts_after_a_clean_baseline(tmp_path: Path) -> None:
    from harness.mutate import baseline as bl
    from harness.report import render_html

    (tmp_path / "metadata.json").write_text(json.dumps({"status": "DONE", "argv": ["fuse-harness", "mutate"]}))
    (tmp_path / "mutants.json").write_text(json.dumps({
        "target": "v7.3", "scope": {"kind": "file", "text": "fs/fuse/dev_uring.c"}, "seed": 1, "candidates": 1,
        "stopped": "done", "bound": 495.0, "timeouts_count": True, "score_rule": bl.score_rule(330.0, 495.0),
        "counts": {"caught": 0, "survived": 0, "timeout": 1, "discarded": 0, "error": 0, "score": 1.0},
        "mutants": [{"id": "0a1b2c3d4e", "operator": "call-drop", "location": "fs/fuse/dev_uring.c:900",
                     "function": "fuse_uring_commit", "diff": "-\tspin_unlock(&queue->lock);\n", "outcome": "timeout",
                     "caught_by": None, "note": "no verdict within 495 s", "seconds": 560.0}]}))
    html = render_html(tmp_path).read_text()
    assert "timeout (caught)" in html and "score 100%" in html
    assert "suite passed in 330 s, so the mutant hung or slowed the kernel: a detection" in html
