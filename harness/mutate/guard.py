"""Put a mutant into a tree and always take it out again.

Three layers, so the tree is never left mutated:
- `applied()` restores the original bytes in a `finally` (an exception, a KeyboardInterrupt);
- `interruptible()` turns SIGTERM and SIGHUP into KeyboardInterrupt for the run (SIGINT
  already is one), and the restore itself runs with those signals blocked, so a second
  Ctrl-C cannot cut it short;
- a journal file (JSON) holds the original bytes, their SHA-256 and the tree's HEAD before
  the file is written; a run that died without restoring (SIGKILL, a power cut) leaves it,
  and the next run's `recover()` puts the bytes back and resets HEAD before anything else.

The journal: {"tree": str, "file": str (relative), "sha256": hex, "original": base64,
"head": commit id or null, "pid": int, "written": epoch seconds}.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from harness.errors import InfraError
from harness.mutate.operators import Mutant

log = logging.getLogger(__name__)

#: Signals that end a run like Ctrl-C (their handlers raise KeyboardInterrupt).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_AUTHOR = {"GIT_AUTHOR_NAME": "fuse-harness", "GIT_AUTHOR_EMAIL": "fuse-harness@localhost",
           "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000"}


class Journal:
    """The recovery record of the one mutant in a tree (at most one at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, tree: Path, file: str, original: bytes, head: str | None) -> None:
        """Write the record (atomically, fsynced) before the file is changed."""
        data = {"tree": str(tree), "file": file, "sha256": hashlib.sha256(original).hexdigest(),
                "original": base64.b64encode(original).decode(), "head": head, "pid": os.getpid(),
                "written": time.time()}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def recover(self) -> str | None:
        """Repair what a dead run left: restore the file and HEAD the journal names, then drop
        the journal. Returns what was repaired ("tree/file"), None when there was no journal.
        InfraError when the journal is unreadable or its bytes do not match their hash."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            original = base64.b64decode(data["original"])
            tree, file = Path(data["tree"]), data["file"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InfraError(f"mutation journal {self.path} is unreadable: {exc}",
                             "restore the file it names by hand (git checkout), then delete the journal") from None
        if hashlib.sha256(original).hexdigest() != data.get("sha256"):
            raise InfraError(f"mutation journal {self.path}: the saved bytes of {file} do not match their hash",
                             "restore the file by hand (git checkout), then delete the journal")
        if tree.is_dir():
            restore(tree, file, original, data.get("head"))
            log.warning("mutate: a run (pid %s) ended with a mutant in %s; restored it from %s",
                        data.get("pid"), tree / file, self.path)
        self.clear()
        return f"{tree}/{file}"


def restore(tree: Path, file: str, original: bytes, head: str | None) -> None:
    """Write the original bytes back (a fresh mtime, so make rebuilds the file) and, in a git
    tree, move HEAD and the index back to `head` (the mutant's commit is dropped)."""
    path = tree / file
    if not path.exists() or path.read_bytes() != original:
        path.write_bytes(original)
    else:
        os.utime(path)
    if head:
        _git(tree, "reset", "--quiet", head)


def _git(tree: Path, *args: str) -> str:
    from harness.series.gitops import git_env

    proc = subprocess.run(["git", "-C", str(tree), "-c", "gc.auto=0", *args], capture_output=True, text=True,
                          env=git_env(**_AUTHOR))
    if proc.returncode != 0:
        raise InfraError(f"git {args[0]} in {tree} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc.stdout.strip()


def head_of(tree: Path) -> str | None:
    """HEAD of a git tree, None for a plain one."""
    return _git(tree, "rev-parse", "HEAD") if (tree / ".git").exists() else None


@contextlib.contextmanager
def applied(tree: Path, mutant: Mutant, journal: Journal, commit: bool = True) -> Iterator[str | None]:
    """The mutant in tree/mutant.file for the block; the original back afterwards, always.

    In a git tree with `commit`, the mutant is also committed (a fixed author and date): the
    tree is then clean, so a build folder pinned to it knows the state exactly and the test
    session reuses the build the driver made (harness.kernel.obtain). Yields the mutant's
    commit (None without git). ValueError when the file is not the text the mutant was made
    from (it is left untouched then)."""
    path = tree / mutant.file
    original = path.read_bytes()
    mutated = mutant.apply(original.decode("latin-1")).encode("latin-1")
    head = head_of(tree)
    journal.record(tree, mutant.file, original, head)
    try:
        path.write_bytes(mutated)
        sha = None
        if head and commit:
            _git(tree, "commit", "--quiet", "--no-verify", "-m", f"mutant {mutant.id}", "--", mutant.file)
            sha = _git(tree, "rev-parse", "HEAD")
        yield sha
    finally:
        with _signals_blocked():
            restore(tree, mutant.file, original, head)
            journal.clear()


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    sigs = {signal.SIGINT, *STOP_SIGNALS}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the block (the main thread's handlers;
    the old ones come back afterwards)."""
    old = {s: signal.signal(s, _raise_interrupt) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
