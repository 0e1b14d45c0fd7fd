"""The contract every kernel source provider follows."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class KernelSource(Protocol):
    """A kernel source tree the harness reads but never writes."""

    spec: str
    #: True when the tree can change under us (a user's tree): always re-run make.
    mutable: bool

    def check(self) -> None:
        """SourceError now if the source cannot exist (a missing path), without downloading."""
        ...

    def prepare(self) -> Path:
        """Make the tree available (download, extract) and return its path."""
        ...

    def identity(self) -> str:
        """A string that changes whenever the tree's content changes (used in cache keys)."""
        ...


def check_clean_for_out_of_tree(tree: Path) -> None:
    """Kbuild refuses O= builds from a tree that was built in place: say so up front."""
    from harness.errors import SourceError

    if (tree / ".config").exists() or (tree / "include" / "config").is_dir():
        raise SourceError(
            f"{tree} has an in-tree build (.config or include/config), so an out-of-tree build is refused",
            hint="the harness never modifies your tree: run `make mrproper` there yourself, "
            "or use a clean `git worktree add`",
        )
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise SourceError(f"{tree} does not look like a kernel source tree (no Makefile/Kconfig)")
