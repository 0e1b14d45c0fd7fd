"""A user's own kernel tree, used read-only: builds go out of tree with O=."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from harness.errors import SourceError
from harness.source.base import check_clean_for_out_of_tree


class TreeSource:
    """`path:/a/linux/tree`."""

    mutable = True

    def __init__(self, value: str) -> None:
        self.spec = f"path:{value}"
        self.path = Path(value).expanduser().resolve()

    def check(self) -> None:
        """Before anything starts: the folder exists, looks like a kernel tree and has no
        in-tree build (check_clean_for_out_of_tree)."""
        hint = "pass path:DIR of a Linux source tree (a folder with the top-level Makefile)"
        if not self.path.exists():
            raise SourceError(f"kernel tree {self.path} does not exist", hint=hint)
        if not self.path.is_dir():
            raise SourceError(f"kernel tree {self.path} is not a folder", hint=hint)
        if not (self.path / "Makefile").is_file() or not (self.path / "Kconfig").is_file():
            raise SourceError(f"{self.path} does not look like a kernel source tree (no Makefile/Kconfig)",
                              hint=hint)
        check_clean_for_out_of_tree(self.path)

    def prepare(self) -> Path:
        self.check()
        return self.path

    def _git(self, *args: str, raw: bool = False) -> str | bytes | None:
        """git's stdout in this tree (bytes with raw=True), None when git fails."""
        try:
            out = subprocess.run(
                ["git", "-C", str(self.path), *args], capture_output=True, text=not raw, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout

    def identity(self) -> str:
        head = self._git("rev-parse", "HEAD")
        if head is None:
            return f"path:{self.path}"
        # the content of the uncommitted changes to tracked files, as raw bytes (a tree has
        # non-UTF-8 files), so two different edits of the same files get two identities
        # (untracked files are not part of it)
        dirty = self._git("diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--no-color",
                          raw=True) or b""
        digest = hashlib.sha256(dirty).hexdigest()[:8] if dirty.strip() else "clean"
        return f"path:{self.path}@{head.strip()}+{digest}"

    def head(self) -> str | None:
        """The tree's HEAD commit, if it is a git tree."""
        out = self._git("rev-parse", "HEAD")
        return out.strip() if out else None
