"""Plain progress lines on stderr (I:/W:/E:/D:) and a phase timer.

Tool output never goes here; it goes to files in the run or build directory.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_PREFIX = {logging.DEBUG: "D", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E"}


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = _PREFIX.get(record.levelno, "E")
        return f"{prefix}: {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (pytest swaps and closes its captures)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the `harness` logger once: I: lines by default, D: with --verbose."""
    root = logging.getLogger("harness")
    root.handlers.clear()
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def fmt_duration(seconds: float) -> str:
    """1.2s, 3m04s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Phases:
    """Per-phase durations, printed as they end and kept for metadata.json."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        log = logging.getLogger("harness")
        log.info("%s ...", name)
        start = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.durations[name] = round(took, 2)
            log.info("%s: done in %s", name, fmt_duration(took))
