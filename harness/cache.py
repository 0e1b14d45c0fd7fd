"""Where things live: one cache root (XDG), numbered run directories, cache keys."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

#: Build folders inside cache-owned source trees (harness.build.place): never indexed, copied
#: or cleaned as part of the source.
INTREE_PREFIX = ".fh-build-"


def cache_root() -> Path:
    """$FUSE_HARNESS_CACHE, else $XDG_CACHE_HOME/fuse-harness, else ~/.cache/fuse-harness."""
    explicit = os.environ.get("FUSE_HARNESS_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser().resolve() / "fuse-harness"


def cache_dir(*parts: str) -> Path:
    """A sub-directory of the cache root, created on demand."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(text: str) -> str:
    """A file-name-safe version of text (kernel Makefiles dislike ~, +, : and spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def key_of(*items: object) -> str:
    """A stable 12-hex-digit key for JSON-serialisable items."""
    blob = json.dumps(items, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def new_run_dir(base: Path, label: str) -> Path:
    """base/NNN-label, numbered after the highest existing run; never reuses one."""
    base.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in base.iterdir() if (m := re.match(r"(\d+)-", p.name))]
    nxt = max(numbers, default=0) + 1
    while True:
        path = base / f"{nxt:03d}-{safe_name(label)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            nxt += 1


def write_json_atomic(path: Path, data: object) -> None:
    """Sorted, indented JSON written to a temp file then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share a temp file
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


#: Seconds exclusive() waits for a lock before it says it is waiting.
QUIET_WAIT = 3.0


@contextlib.contextmanager
def exclusive(name: str, what: str) -> Iterator[None]:
    """Hold <cache>/<name>.lock (an flock) for the block: two fuse-harness processes (two
    sessions, or xdist workers) never build a kernel at the same time; the second waits, says so
    when the wait lasts over QUIET_WAIT seconds (another worker finding the build done holds it
    about a second), then finds the first one's result cached."""
    with locked(cache_root() / f"{name}.lock", what):
        yield


def lock_path(kind: str, identity: str) -> Path:
    """<cache>/locks/<kind>-<name>.lock for one thing in the cache that more than one process can
    create (a source tree): the readable part of
    identity and a hash of all of it, so two identities never share a lock."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache_root() / "locks" / f"{kind}-{safe_name(identity)[:60]}-{digest}.lock"


@contextlib.contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive flock on path (created with its folder) for the block. A second holder
    waits, and logs "<what>: waiting for another fuse-harness process (<path>)" once the wait
    lasts over QUIET_WAIT seconds. The kernel drops an flock when its holder dies, so a killed
    process never leaves a lock behind: what it left half-made is the next holder's to clean."""
    fd = lock_file(path, wait=False)
    deadline = time.monotonic() + QUIET_WAIT
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.1)
        fd = lock_file(path, wait=False)
    if fd is None:
        logging.getLogger("harness").info("%s: waiting for another fuse-harness process (%s)", what, path)
        fd = lock_file(path, wait=True)
    try:
        yield
    finally:
        os.close(fd)


def lock_file(path: Path, wait: bool) -> int | None:
    """An exclusive flock on path (created with its folder): the open fd that holds it (close
    it to release), or None when another process holds it and wait is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
