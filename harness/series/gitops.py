"""Private scratch repositories: never write into the user's source tree or its .git.

A git source gets a bare `clone --shared` (objects borrowed, refs copied; the user's
repository is only read). A plain tree is indexed in place into a private bare repo
(`--work-tree=SOURCE add -A -f`, reading only) and committed once. Per series, a
`git worktree add --detach` of that private repo checks out real, independent files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from harness.cache import INTREE_PREFIX, locked
from harness.errors import MissingTool, SeriesError, SourceError

log = logging.getLogger(__name__)

IDENTITY = {
    "GIT_COMMITTER_NAME": "fuse-harness",
    "GIT_COMMITTER_EMAIL": "fuse-harness@localhost",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}
_BASE_AUTHOR = {
    "GIT_AUTHOR_NAME": "fuse-harness",
    "GIT_AUTHOR_EMAIL": "fuse-harness@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
}
BASE_REF = "refs/heads/base"


def git_env(**extra: str) -> dict[str, str]:
    """Environment for every git call: no user/system config, C locale, fixed committer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", LANG="C")
    env.update(IDENTITY)
    env.update(extra)
    return env


def git(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True, what: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run git with the harness environment; raise SeriesError on failure if `check`."""
    cmd = ["git", "-c", "gc.auto=0", "-c", "core.autocrlf=false", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env or git_env(), capture_output=True, text=True)
    except FileNotFoundError:
        raise MissingTool("git is not installed", "apt-get install git") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise SeriesError(f"{what or 'git ' + args[0]} failed: {detail}")
    return proc


def is_git_tree(source: Path) -> bool:
    """True when `source` is the top of a git work tree."""
    return (source / ".git").exists()


def plain_source_id(source: Path) -> str:
    """Identity of a plain tree: its path plus every file's size and mtime (~1 s for 90k files)."""
    h = hashlib.sha256(str(source).encode())
    stack = [str(source)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                st = e.stat(follow_symlinks=False)
                h.update(f"{e.path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return f"tree:{source}:{h.hexdigest()[:16]}"


def resolve_commit(repo: Path, rev: str) -> str | None:
    """The commit id `rev` names in `repo`, or None."""
    proc = git("-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def repo_lock(repo: Path) -> Path:
    """The lock file of a private repository (harness.cache.locked): held while it is made or
    indexed and while a worktree is added to it, so two processes never do either at once."""
    return repo.with_name(repo.name + ".lock")


def base_repo_for_git(source: Path, rev: str, repos: Path) -> tuple[Path, str, str]:
    """(private bare repo, base commit, source id) for a git source at `rev`."""
    commit = resolve_commit(source, rev)
    if not commit:
        raise SeriesError(
            f"base {rev!r} is not a commit in {source}",
            "fetch it into your tree (e.g. `git fetch <remote> <commit>`) or pass another base",
        )
    key = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    repo = repos / f"git-{key}.git"
    with locked(repo_lock(repo), f"cloning {source}"):
        if not (repo / "HEAD").is_file():  # cloned beside it, then renamed: present means whole
            partial = repo.with_name(repo.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)  # a clone cut short
            repos.mkdir(parents=True, exist_ok=True)
            git("clone", "--bare", "--shared", "--quiet", str(source), str(partial), what=f"cloning {source}")
            os.replace(partial, repo)
    return repo, commit, f"git:{source}@{commit}"


def base_repo_for_tree(source: Path, repos: Path, source_id: str) -> tuple[Path, str]:
    """(private bare repo, base commit) holding `source` as its only commit; cached by id."""
    key = hashlib.sha256(source_id.encode()).hexdigest()[:12]
    repo = repos / f"tree-{key}.git"
    with locked(repo_lock(repo), f"indexing {source}"):
        return _index_tree(source, repo, source_id)


def _index_tree(source: Path, repo: Path, source_id: str) -> tuple[Path, str]:
    """base_repo_for_tree under its lock: a repo without its base ref (an indexing cut short) is
    made anew, never trusted."""
    repos = repo.parent
    if (repo / "HEAD").is_file():
        commit = resolve_commit(repo, BASE_REF)
        if commit:
            return repo, commit
    shutil.rmtree(repo, ignore_errors=True)
    repos.mkdir(parents=True, exist_ok=True)
    if (source / ".config").exists() or (source / "vmlinux").exists():
        log.warning("%s looks built: its build outputs become part of the scratch commit", source)
    log.info("indexing plain tree %s into %s", source, repo)
    git("init", "--quiet", "--bare", str(repo))
    index = repo / "base.index"
    env = git_env(GIT_INDEX_FILE=str(index), **_BASE_AUTHOR)
    gd = ["--git-dir", str(repo), "--work-tree", str(source)]
    # -f: Debian's top-level .gitignore ignores everything; take the tree exactly as it is.
    git(*gd, "add", "-A", "-f", "--", ".", f":(exclude,glob){INTREE_PREFIX}*/**", env=env,
        what=f"indexing {source}")
    tree = git(*gd, "write-tree", env=env).stdout.strip()
    msg = f"fuse-harness: plain tree {source}\n\nsource-id: {source_id}\n"
    commit = git("--git-dir", str(repo), "commit-tree", tree, "-m", msg, env=env).stdout.strip()
    # Keep the index: copy_worktree() pairs it with a `cp -a` copy (same sizes and mtimes),
    # and minimal stat checks make git trust it without re-hashing ~90k files.
    git("--git-dir", str(repo), "config", "core.checkStat", "minimal")
    git("--git-dir", str(repo), "config", "core.trustctime", "false")
    git("--git-dir", str(repo), "update-ref", BASE_REF, commit)  # last: the base ref means complete
    return repo, commit


def copy_worktree(repo: Path, source: Path, tree: Path, commit: str) -> None:
    """A worktree of the plain-tree base commit made by copying `source` (reflink when possible).

    Much faster than a checkout on big trees; `reset --hard` then repairs any file that
    changed since the base was indexed.
    """
    index = repo / "base.index"
    if not index.is_file():
        add_worktree(repo, tree, commit)
        return
    if reset_worktree(repo, tree, commit):
        return
    if tree.exists():
        drop_worktree(repo, tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    git("--git-dir", str(repo), "worktree", "add", "--quiet", "--no-checkout", "--detach", str(tree), commit)
    entries = sorted(str(e) for e in source.iterdir() if not e.name.startswith(INTREE_PREFIX))
    proc = subprocess.run(["cp", "-a", "--reflink=auto", *entries, f"{tree}/"], capture_output=True, text=True)
    if proc.returncode != 0:
        drop_worktree(repo, tree)
        raise SeriesError(f"copying {source} into {tree} failed: {proc.stderr.strip()[-300:]}", "is the disk full?")
    shutil.copyfile(
        index, git("-C", str(tree), "rev-parse", "--path-format=absolute", "--git-path", "index").stdout.strip()
    )
    git("-C", str(tree), "reset", "--hard", "--quiet", what=f"resetting {tree}")


def add_worktree(repo: Path, tree: Path, commit: str) -> None:
    """Check `commit` out into a fresh detached worktree at `tree` (resetting or replacing any old one)."""
    if reset_worktree(repo, tree, commit):
        return
    if tree.exists():
        drop_worktree(repo, tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    git(
        "--git-dir",
        str(repo),
        "worktree",
        "add",
        "--quiet",
        "--detach",
        str(tree),
        commit,
        what=f"checking out {commit[:12]} into {tree}",
    )


def reset_worktree(repo: Path, tree: Path, commit: str) -> bool:
    """Turn an existing worktree of `repo` at `tree` back into exactly `commit`; False if it is not one.

    An interrupted `git am` is aborted, tracked files are reset and every untracked or ignored
    file (build folders too) is removed. Much cheaper than deleting and copying a kernel tree
    again: removing ~90k files can take minutes on a busy disk.
    """
    if not (tree / ".git").is_file():
        return False
    common = git("-C", str(tree), "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
    if common.returncode != 0 or Path(common.stdout.strip()).resolve() != repo.resolve():
        return False
    git("-C", str(tree), "am", "--abort", check=False)
    if git("-C", str(tree), "reset", "--hard", "--quiet", commit, check=False).returncode != 0:
        return False
    if git("-C", str(tree), "clean", "-ffdxq", check=False).returncode != 0:
        return False
    log.info("reusing the scratch tree %s at %s", tree, commit[:12])
    return True


def drop_worktree(repo: Path, tree: Path) -> None:
    """Remove a scratch worktree and its metadata in the private repo."""
    git("--git-dir", str(repo), "worktree", "remove", "--force", "--force", str(tree), check=False)
    shutil.rmtree(tree, ignore_errors=True)
    git("--git-dir", str(repo), "worktree", "prune", check=False)


def check_source(source: Path) -> Path:
    """Resolve the user's source path, or raise SourceError."""
    src = source.expanduser().resolve()
    if not src.is_dir():
        raise SourceError(f"kernel source {src} is not a folder", "pass the top of a kernel tree")
    return src
