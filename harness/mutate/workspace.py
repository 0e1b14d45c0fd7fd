"""The private tree a mutation run edits, its pinned build folder and its journal.

    <cache>/mutate/<target>-<profile>/
        tree/                   a git worktree of the harness's private repo of the source (at the
                                series' head when the target has one); never the cached tree
                                other runs build from
        tree/.fh-build-mutate-* the one build folder of every mutant (incremental makes; inside
                                the tree, so Kbuild calls the source `..` and ccache hits the
                                cached builds' objects: harness.build.place)
        target.yaml             the target as a plain tree: source path:tree/, no series, the
                                series' promises added (the test sessions read it)
        journal.json            the mutant in flight (harness.mutate.guard)
        ledgers/                finished mutants per scope, seed and -k (resume, test order)
        baselines/              clean runs of the suite per tree head, -k and suite text
                                (harness.mutate.baseline: pass, time bound, test times)
        lock                    one run per workspace
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import source
from harness.cache import INTREE_PREFIX, cache_dir, exclusive, safe_name
from harness.config import PROMISABLE, Target
from harness.errors import UserError
from harness.mutate.guard import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    root: Path
    tree: Path
    build_dir: Path
    target_file: Path
    head: str
    #: the commit before the series' first own patch (None without a series)
    series_base: str | None
    journal: Journal


def lock(root: Path) -> int:
    """Hold root/lock for the process's life (the fd); UserError when another run holds it."""
    fd = os.open(str(root / "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another `fuse-harness mutate` of this target and profile is running (lock {root / 'lock'})",
                        "wait for it, or stop it (Ctrl-C restores its tree)") from None
    return fd


def root_of(target: Target, profile: str) -> Path:
    return cache_dir("mutate", safe_name(f"{target.name}-{profile}"))


def prepare(target: Target, profile: str, root: Path, source_override: str | None,
            series_ref: str | None) -> Workspace:
    """Repair a dead run's mutant (the journal), then make or reset the private tree at the
    source's (or the series') head. The source and series are prepared as `fuse-harness build`
    does (cached; under the cache's obtain lock)."""
    from harness.series import gitops

    journal = Journal(root / "journal.json")
    journal.recover()
    tree = root / "tree"
    promises = list(target.promises)
    series_base = None
    with exclusive("obtain", "kernel"):
        src = source.parse(source_override or target.source)
        base_tree, identity = src.prepare(), src.identity()
        repos = cache_dir("series") / "repos"
        copy_from = None
        if series_ref:
            from harness.series import apply, parse_series

            spec = parse_series(series_ref)
            done = apply(base_tree, spec, cache_dir("series"), source_id=identity)
            repo = Path(gitops.git("-C", str(done.tree), "rev-parse", "--path-format=absolute",
                                   "--git-common-dir").stdout.strip())
            commit = done.head
            own = [p.commit for p in done.patches if p.series == spec.ref and p.commit]
            if own:
                series_base = gitops.git("-C", str(done.tree), "rev-parse", f"{own[0]}^").stdout.strip()
            promises += [p for p in spec.promises if p not in promises and p in PROMISABLE]
        elif gitops.is_git_tree(base_tree):
            repo, commit, _ = gitops.base_repo_for_git(base_tree, "HEAD", repos)
        else:
            repo, commit = gitops.base_repo_for_tree(base_tree, repos, identity)
            copy_from = base_tree
        ensure_worktree(repo, tree, commit, copy_from)
    target_file = root / "target.yaml"
    target_file.write_text(yaml.safe_dump({
        "name": target.name, "description": f"{target.description or target.name} (private tree of "
                                            f"`fuse-harness mutate`)",
        "source": f"path:{tree}", "kconfig": list(target.kconfig), "promises": promises,
        **({"kernel_version": target.kernel_version} if target.kernel_version else {})}, sort_keys=False))
    build_dir = tree / f"{INTREE_PREFIX}{safe_name(f'mutate-{target.name}-{profile}')}"
    return Workspace(root, tree, build_dir, target_file, commit, series_base, journal)


def ensure_worktree(repo: Path, tree: Path, commit: str, copy_from: Path | None) -> None:
    """`tree` as a clean worktree of `repo` at `commit`, keeping its build folder (an existing
    worktree is reset; files that do not change keep their mtimes, so the next make is
    incremental). A new one is a reflink copy of a plain source (copy_from) or a checkout."""
    from harness.series import gitops

    if (tree / ".git").is_file():
        common = gitops.git("-C", str(tree), "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
        if common.returncode == 0 and Path(common.stdout.strip()).resolve() == repo.resolve():
            gitops.git("-C", str(tree), "reset", "--hard", "--quiet", commit, what=f"resetting {tree}")
            gitops.git("-C", str(tree), "clean", "-fdxq", "-e", f"/{INTREE_PREFIX}*", what=f"cleaning {tree}")
            log.info("mutate: private tree %s at %s", tree, commit[:12])
            return
    if tree.exists():
        subprocess.run(["rm", "-rf", str(tree)], check=False)
        shutil.rmtree(tree, ignore_errors=True)
    gitops.git("--git-dir", str(repo), "worktree", "prune", check=False)
    log.info("mutate: making the private tree %s at %s (once)", tree, commit[:12])
    if copy_from is not None:
        gitops.copy_worktree(repo, copy_from, tree, commit)
    else:
        gitops.add_worktree(repo, tree, commit)
