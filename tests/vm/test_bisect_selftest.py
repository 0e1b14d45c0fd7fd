"""`fuse-harness bisect` finds the canary in a 14-commit history on the 7.3 source.

The plain 7.3 tree is indexed into a private scratch repository under the cache (like a
series base), then 14 commits (a posted series' size) are made on top: harmless edits, and
the canary `patches/canary/add-bufpool-flags` as the 9th. The bisection runs the ADD_BUFPOOL
flags test in nested pytest runs and must name the canary commit. Paths are stable, so a rerun
reuses the history, the private clone and the pinned build folder (incremental builds).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.cache import cache_dir, locked
from harness.config import REPO
from harness.log import fmt_duration
from harness.series import gitops

NODE = "tests/vm/test_edge_commands.py::test_add_bufpool_rejects_flags"
CANARY = REPO / "patches" / "canary" / "add-bufpool-flags" / "0001-add-bufpool-flags.patch"
AUTHOR = {"GIT_AUTHOR_NAME": "fuse-harness", "GIT_AUTHOR_EMAIL": "fuse-harness@localhost",
          "GIT_AUTHOR_DATE": "2000-01-02T00:00:00+0000"}
#: The files the harmless commits append a comment to, in turn (docs rebuild nothing; the
#: canary's own file, fs/fuse/dev_uring.c, is left alone so it applies as posted).
TOUCHED = ("Documentation/filesystems/fuse/fuse-io-uring.rst", "fs/fuse/dir.c", "fs/fuse/file.c",
           "fs/fuse/inode.c", "fs/fuse/dev.c")
#: A history of a posted series' size: 14 commits, the canary the 9th (git bisect then takes
#: 4 steps); (file, subject) of each harmless commit, None where the canary goes.
CANARY_AT = 9


def _edit(n: int) -> tuple[str, str]:
    rel = TOUCHED[n % len(TOUCHED)]
    return rel, f"{'doc' if rel.endswith('.rst') else 'fuse'}: {Path(rel).stem}: self-test note {n}"


EDITS = tuple(None if n == CANARY_AT else _edit(n) for n in range(1, 15))


def _subjects(tree: Path, base: str) -> list[str]:
    out = gitops.git("-C", str(tree), "log", "--reverse", "--format=%s", f"{base}..HEAD", check=False).stdout
    return out.splitlines()


def make_history(kernel_tree: Path, source_id: str) -> tuple[Path, str, str, str]:
    """(scratch git tree, good = base commit, bad = head, canary commit); reused when present."""
    root = cache_dir("selftest")
    with locked(root / "bisect-history.lock", "bisect self-test history"):  # two runs at once
        return _make_history(root, kernel_tree, source_id)


def _make_history(root: Path, kernel_tree: Path, source_id: str) -> tuple[Path, str, str, str]:
    repo, base = gitops.base_repo_for_tree(kernel_tree, root / "repos", source_id)
    tree = root / "bisect-history"
    canary_subject = "fuse: dev_uring: share the flag check of ADD_QUEUE with ADD_BUFPOOL"
    wanted = [e[1] if e else canary_subject for e in EDITS]
    if not (tree / ".git").exists() or _subjects(tree, base) != wanted:
        gitops.copy_worktree(repo, kernel_tree, tree, base)
        env = gitops.git_env(**AUTHOR)
        for n, edit in enumerate(EDITS, 1):
            if edit is None:
                gitops.git("-C", str(tree), "am", "--quiet", str(CANARY), env=env, what="git am canary")
                continue
            rel, subject = edit
            path = tree / rel
            note = f"fuse-harness bisect self-test: harmless edit {n}"
            with path.open("a") as f:
                f.write(f"\n.. {note}\n" if rel.endswith(".rst") else f"\n/* {note} */\n")
            gitops.git("-C", str(tree), "commit", "--quiet", "-a", "-m", subject, env=env)
        gitops.git("-C", str(tree), "branch", "-f", "selftest", "HEAD")
    head = gitops.resolve_commit(tree, "HEAD")
    out = gitops.git("-C", str(tree), "log", "--format=%H %s", f"{base}..HEAD").stdout
    canary = next(line.split()[0] for line in out.splitlines() if line.endswith(canary_subject))
    assert head
    return tree, base, head, canary


@pytest.mark.slow
def test_bisect_names_the_canary(kernel, run_dir, record_property):
    """A bisection over 14 commits names the canary commit; its wall time and each step's
    seconds are printed and recorded (bisect_seconds, bisect_steps)."""
    from harness.bisect import Bisection

    if kernel.target.kernel_version != "7.3" or kernel.series:
        pytest.skip("the canary applies to the plain 7.3 tree (use --target v7.3)")
    node = NODE
    tree, good, bad, canary = make_history(kernel.tree, kernel.source_identity)
    start = time.monotonic()
    result = Bisection(tree, good, bad, node, kernel.target.name, kernel.profile, repeat=2,
                       results=run_dir / "bisect").run()
    took = time.monotonic() - start
    record_property("bisect_seconds", round(took, 1))
    record_property("bisect_steps", [round(s["seconds"], 1) for s in result["steps"]])
    steps = ", ".join(f"{s['commit'][:12]}={s['verdict']} ({s['seconds']:.0f}s)" for s in result["steps"])
    print(f"bisect of {node}: {len(result['steps'])} steps in {fmt_duration(took)}: {steps}")
    assert (result.get("first_bad") or {}).get("commit") == canary, result
