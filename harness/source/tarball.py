"""A kernel tarball (.tar, .tar.gz, .tar.xz), extracted once into the cache."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from harness.cache import cache_dir, lock_path, locked
from harness.errors import SourceError

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: The file whose presence says a tree in the cache is complete (written last, before the rename).
EXTRACTED = ".fuse-harness-extracted"


def extract_tarball(tarball: Path, dest: Path, extra: dict[str, str] | None = None) -> Path:
    """Extract tarball into dest atomically, stripping a single top-level directory.

    The tree is made in `<dest>.partial` and renamed into place with its EXTRACTED marker (and
    the `extra` files, name -> text) already written, so a tree at dest is complete or absent.
    A `.partial` or `.root` folder found on entry is what a killed process left: it is removed,
    never reused. The caller holds dest's lock (harness.cache.locked): without it two processes
    would extract into the same `.partial`. Raises SourceError when tar fails.
    """
    if (dest / EXTRACTED).exists():
        return dest
    tmp, root_tmp = dest.with_name(dest.name + ".partial"), dest.with_name(dest.name + ".root")
    for stale in (tmp, root_tmp):
        if stale.exists():
            log.info("removing %s, left by an interrupted extraction", stale.name)
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    log.info("extracting %s (about 15 s for a kernel tarball)", tarball.name)
    result = subprocess.run(["tar", "-xf", str(tarball), "-C", str(tmp)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SourceError(f"cannot extract {tarball}: {result.stderr.strip()[-400:]}")
    entries = list(tmp.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    if root is not tmp:
        os.replace(root, root_tmp)
        shutil.rmtree(tmp)
        root = root_tmp
    for name, text in {**(extra or {}), EXTRACTED: str(tarball) + "\n"}.items():
        (root / name).write_text(text)
    if dest.exists():  # a tree without its marker: an extraction of an older harness, cut short
        shutil.rmtree(dest)
    os.replace(root, dest)
    return dest


class TarballSource:
    """`tarball:FILE`."""

    mutable = False

    def __init__(self, value: str) -> None:
        self.spec = f"tarball:{value}"
        self.path = Path(value).expanduser().resolve()
        self._digest: str | None = None

    def check(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"tarball {self.path} does not exist",
                              hint="pass tarball:FILE of a kernel source archive (.tar.xz, .tar.gz, ...)")

    def identity(self) -> str:
        self.check()
        if self._digest is None:
            self._digest = sha256_file(self.path)
        return f"tarball:{self._digest}"

    def prepare(self) -> Path:
        digest = self.identity().split(":", 1)[1]
        dest = cache_dir("sources") / f"tarball-{digest[:16]}"
        with locked(lock_path("source", dest.name), f"source {self.spec}"):
            tree = extract_tarball(self.path, dest)
        if not (tree / "Makefile").is_file():
            raise SourceError(f"{self.path} does not contain a kernel tree (no top-level Makefile)")
        return tree
