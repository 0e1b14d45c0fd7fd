"""metadata.json (written early, updated at the end, always atomically) and reproduce.sh."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from harness import __version__
from harness.cache import write_json_atomic


class Metadata:
    """The run's record; saved after every update so a killed run still leaves one."""

    def __init__(self, run_dir: Path, argv: list[str], persist: bool = True) -> None:
        """persist=False keeps the record in memory only (an xdist worker: the controller
        writes metadata.json)."""
        self.path = run_dir / "metadata.json" if persist else None
        self.data: dict[str, Any] = {
            "harness_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "status": "RUNNING",
            "host": {"machine": platform.machine(), "kernel": platform.release(),
                     "python": sys.version.split()[0], "cpus": os.cpu_count()},
            "argv": argv,
            "durations": {},
        }
        self.save()

    def update(self, **items: Any) -> None:
        self.data.update(items)
        self.save()

    def save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, self.data)

    def finish(self, status: str, durations: dict[str, float]) -> None:
        self.data["status"] = status
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.data["durations"].update(durations)
        self.save()


#: The options that select a kernel and a VM, in the order a rerun command lists them.
RERUN_OPTIONS = ("target", "profile", "source", "series", "accel")


def rerun_command(nodeid: str, values: dict[str, Any]) -> list[str]:
    """The pytest command line that reruns one test on the same kernel (empty values left out)."""
    cmd = [".venv/bin/python", "-m", "pytest", nodeid]
    for key in RERUN_OPTIONS:
        if values.get(key):
            cmd += [f"--{key}", str(values[key])]
    return cmd


#: The first lines of every reproducer: find the checkout at run time, never a path of the
#: machine that wrote it. FUSE_HARNESS_CHECKOUT wins; else the git checkout the script sits in
#: (results/NNN/ of a checkout); else the current directory (run it from your checkout).
CHECKOUT_PROLOGUE = (
    "# Run from a checkout of fuse-harness (make setup done); FUSE_HARNESS_CHECKOUT names another.",
    'cd "${FUSE_HARNESS_CHECKOUT:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null'
    ' || pwd)}"',
)


def write_reproducer(run_dir: Path, lines: list[str], name: str = "reproduce.sh") -> Path:
    """run_dir/name: a shell script that repeats this run (or one test) from a checkout of the
    harness; it holds no path of this machine (CHECKOUT_PROLOGUE finds the checkout)."""
    path = run_dir / name
    body = ["#!/bin/sh", "set -e", *CHECKOUT_PROLOGUE, *lines]
    path.write_text("\n".join(body) + "\n")
    path.chmod(0o755)
    return path
