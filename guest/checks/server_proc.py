"""Start, stop and clean up a `serve` subprocess (never waits on a wedged mount)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from guest import mount as M

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ServerProc:
    """One `python3 -m guest serve` child with its ready/counters/log files."""

    def __init__(self, workdir: str, mnt: str, transport: str, extra: list[str]) -> None:
        self.mnt = mnt
        self.ready_file = os.path.join(workdir, "ready.json")
        self.counters_file = os.path.join(workdir, "counters.json")
        self.log_file = os.path.join(workdir, "server.log")
        self.cmd = [sys.executable, "-m", "guest", "serve", "--mount", mnt,
                    "--transport", transport, "--ready-file", self.ready_file,
                    "--counters", self.counters_file, *extra]
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self, timeout: float = 60.0) -> dict:
        """Spawn and wait for the ready file; raise RuntimeError with the log tail."""
        env = dict(os.environ, PYTHONPATH=PKG_ROOT)
        with open(self.log_file, "w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log, env=env,
                                         cwd=PKG_ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    return json.load(f)
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s: {self.log_tail()}")

    def wait(self, timeout: float) -> int | None:
        """Wait for exit up to timeout; the exit code or None."""
        if self.proc is None:
            return self.returncode
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the server unmounts itself); abort + SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.wait(0)
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            M.teardown(self.mnt)
            self.proc.kill()
            rc = self.wait(10)
        return rc

    def counters(self) -> dict | None:
        """The counters JSON written at exit (None if missing or torn)."""
        try:
            with open(self.counters_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def log_tail(self, n: int = 15) -> str:
        """Last lines of the server log."""
        try:
            with open(self.log_file) as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"
