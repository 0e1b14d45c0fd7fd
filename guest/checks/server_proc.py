"""Start, stop and clean up a `serve` child (never waits on a wedged mount).

The child is a fork of this process running `python3 -m guest serve` (guest.serve_cli), not a new
interpreter: under TCG a fresh one costs about 1.5 s to start and import the server, which the
resident guest runner (guest/runner.py) has already imported in this process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable

from guest import mount as M
from guest.resident import run_main
from guest.serve_cli import cli as serve_cli

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Child:
    """A forked child with the part of subprocess.Popen's interface ServerProc uses."""

    def __init__(self, argv: list[str], log_path: str, main: Callable[[list[str]], int] = serve_cli) -> None:
        """Fork and run main(argv) in the child (by default `python3 -m guest serve`'s: argv
        starts with "serve"; the whole CLI is guest.__main__.main): stdin from /dev/null, stdout
        and stderr to log_path, no other file descriptor of this process (so a stranded child
        holds no pipe or socket of the check open), signals at their defaults."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid:
            return
        try:
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
        except BaseException:  # noqa: BLE001 - no log to say it in: the exit code does
            os._exit(70)  # EX_SOFTWARE
        run_main(main, argv, 1, 2, PKG_ROOT)

    def poll(self) -> int | None:
        """The exit code once the child has ended (reaped here), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """The exit code; TimeoutError if the child still runs after timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"pid {self.pid} still running after {timeout}s")
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ServerProc:
    """One `python3 -m guest serve` child (forked: Child) with its ready/counters/log files."""

    def __init__(self, workdir: str, mnt: str, transport: str, extra: list[str]) -> None:
        self.mnt = mnt
        self.ready_file = os.path.join(workdir, "ready.json")
        self.counters_file = os.path.join(workdir, "counters.json")
        self.log_file = os.path.join(workdir, "server.log")
        self.argv = ["serve", "--mount", mnt, "--transport", transport,
                     "--ready-file", self.ready_file, "--counters", self.counters_file, *extra]
        self.proc: Child | None = None
        self.returncode: int | None = None

    def start(self, timeout: float = 60.0) -> dict:
        """Fork the server and wait for the ready file; raise RuntimeError with the log tail."""
        self.proc = Child(self.argv, self.log_file)
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
        except TimeoutError:
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

    def snapshot(self, timeout: float = 10.0) -> dict | None:
        """The counters as they are now: SIGUSR1 makes the running server rewrite its counters file
        (guest/daemon.py, atomically); wait for a document whose `updated` differs from the one
        before. None when the server is not running (or not yet ready: its handler is installed
        before the ready file is written) or wrote nothing new within timeout seconds. Requests
        are counted as they arrive, before they are served, so a client call that has returned
        is in the snapshot."""
        if self.proc is None or self.proc.poll() is not None or not os.path.exists(self.ready_file):
            return None
        before = (self.counters() or {}).get("updated")
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.counters()
            if c is not None and c.get("updated") != before:
                return c
            time.sleep(0.02)
        return None

    def log_tail(self, n: int = 15) -> str:
        """Last lines of the server log."""
        try:
            with open(self.log_file) as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"
