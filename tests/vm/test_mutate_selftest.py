"""`fuse-harness mutate` end to end on the 7.3 source: one mutant of a known-caught kind.

The mutant drops the `flags` operand of fuse_uring_add_bufpool's argument check
(`if (!ring || qid >= ring->nr_queues || flags) return -EINVAL;` -> no flags check): the very
bug of the canary patch (patches/canary/add-bufpool-flags), which
test_add_bufpool_rejects_flags catches. The run must build it incrementally in the mutate
workspace's pinned build folder, name that test as the catcher, restore the private tree
(no journal left, `git status` clean, HEAD back) and write mutants.json and report.html. Before
the mutant, the same -k passes on the unmutated tree (the clean baseline, cached per tree head
and suite), which bounds the mutant's session; the mutant's tests ran in the order the plan
explains (order.json.order.txt).
Slow: one incremental build (a full warm-ccache build the first time) and two guest boots (one
when the baseline is cached).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import REPO

NODE = "tests/vm/test_edge_commands.py::test_add_bufpool_rejects_flags"
BASE = ["--target", "v7.3", "--file", "fs/fuse/dev_uring.c", "--function", "fuse_uring_add_bufpool"]


def _mutate(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "mutate", *BASE, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_mutate_catches_the_dropped_flags_check(pytestconfig: pytest.Config, tmp_path: Path) -> None:
    target = pytestconfig.getoption("--target") or "v7.3"
    if target != "v7.3" or pytestconfig.getoption("--series") or pytestconfig.getoption("--source"):
        pytest.skip("the self-test mutates the plain 7.3 source (run it with --target v7.3)")
    listed = _mutate("--list", "--max", "1000", timeout=1800)
    assert listed.returncode == 0, listed.stderr
    wanted = [line for line in listed.stdout.splitlines()
              if "cond-drop" in line and line.rstrip().endswith("-> '!ring || qid >= ring->nr_queues'")]
    assert len(wanted) == 1, listed.stdout
    mutant = wanted[0].split()[0]
    done = _mutate("--mutant", mutant, "-k", "test_add_bufpool_rejects_flags", "--results-dir", str(tmp_path),
                   timeout=3600)
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-2000:]
    run = next(tmp_path.glob("[0-9][0-9][0-9]-mutate-v7.3"))
    data = json.loads((run / "mutants.json").read_text())
    (rec,) = data["mutants"]
    assert (rec["id"], rec["outcome"], rec["caught_by"]) == (mutant, "caught", NODE), rec
    assert "-\tif (!ring || qid >= ring->nr_queues || flags)" in rec["diff"]
    assert data["counts"]["caught"] == 1 and data["counts"]["score"] == 1.0
    base = data["baseline"]
    assert base["seconds"] > 0 and NODE in base["tests"], base
    assert data["bound"] >= base["seconds"] + 120 and data["timeouts_count"] is True
    assert NODE in (run / "mutants" / mutant / "order.json.order.txt").read_text()
    assert '<h2 id="mutants">' in (run / "report.html").read_text()
    tree = Path(data["tree"])
    assert not (tree.parent / "journal.json").exists()
    status = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, check=True).stdout
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert status == "" and head == data["head"]
    assert re.search(r"caught 1, survived 0", done.stdout)
