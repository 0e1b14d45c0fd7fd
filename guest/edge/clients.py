"""Client processes: forked children that touch the mount and report back.

A child may block forever inside the kernel; the parent only polls a pipe,
so a wedged client never wedges the scenario. Children pin themselves to a
CPU so their requests land on that CPU's queue.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import time
from collections.abc import Callable

from guest.edge.core import Ctx, task_state


def detach_stdio() -> None:
    """Point a forked child's stdout/stderr at /dev/null: a child stranded in the kernel must
    not hold the scenario's output pipes open (whoever reads them would wait for ever)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def fork_server(ctx: Ctx, tag: str, body: Callable[[int], None]) -> tuple[int, int, str]:
    """Fork a server process for a mount at ctx.mountpoint(tag): the child runs body(w) (w: a
    pipe to report progress on) and exits. Returns (pid, the pipe's read end, mount point)."""
    mnt = ctx.mountpoint(tag)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            detach_stdio()
            body(w)
        finally:
            os._exit(0)
    os.close(w)
    ctx.pids.append(pid)
    return pid, r, mnt


class Client:
    """One forked client running fn() (which returns a JSON-able value)."""

    def __init__(self, ctx: Ctx, name: str, fn: Callable[[], object], cpu: int | None = 0,
                 gate: bool = False) -> None:
        self.name = name
        self.result: dict | None = None
        self._buf = b""  # the result's bytes read so far
        self.t_start = time.monotonic()
        r, w = os.pipe()
        gr, gw = os.pipe() if gate else (-1, -1)
        pid = os.fork()
        if pid == 0:  # child: never returns
            os.close(r)
            detach_stdio()
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                if gate:
                    os.close(gw)
                    os.read(gr, 1)
                t0 = time.monotonic()
                try:
                    out = {"ok": True, "value": fn()}
                except OSError as exc:
                    out = {"ok": False, "errno": exc.errno, "error": str(exc)}
                out.update(t0=t0, t1=time.monotonic())
                os.write(w, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(w)
        if gate:
            os.close(gr)
        self.pid, self.rfd, self.gate_fd = pid, r, gw
        ctx.pids.append(pid)
        ctx.closers.append(self._close)

    def go(self) -> None:
        """Release a gated client."""
        self.t_start = time.monotonic()
        os.write(self.gate_fd, b"g")

    def poll(self, timeout: float = 0.0) -> dict | None:
        """The client's result once it finished, else None after timeout."""
        if self.result is not None:
            return self.result
        ready, _, _ = select.select([self.rfd], [], [], max(0.0, timeout))
        if not ready:
            return None
        # The result is whole once it parses: the child may still be exiting (its close() of a
        # file on the mount sends FLUSH, which only this scenario's own pump can answer), so
        # waiting for EOF here could wait for the scenario itself.
        while True:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                self.result = {"ok": False, "errno": None, "error": "client died"} if not self._buf else \
                    {"ok": False, "errno": None, "error": f"client died mid-result: {self._buf[:80]!r}"}
                return self.result
            self._buf += chunk
            try:
                self.result = json.loads(self._buf)
                return self.result
            except ValueError:
                if not select.select([self.rfd], [], [], max(0.0, timeout))[0]:
                    return None

    def done(self) -> bool:
        return self.poll() is not None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def alive_after_kill(self, timeout: float) -> bool:
        """SIGKILL, then True if the process still exists after timeout."""
        self.kill()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return False
            if done:
                return False
            time.sleep(0.02)
        return True

    def state(self) -> str:
        """The task state letter from /proc (R, S, D, Z, ...) or '-' when gone."""
        return task_state(self.pid)

    def verdict(self, want: object, clean: tuple[int, ...], describe: Callable[[object], str] | None = None,
                waited: str = "") -> tuple[bool, str]:
        """judge() of what the client has done by now (no waiting): (clean?, what it saw). A
        client still blocked is named with `waited` and its task state: "the client is still
        blocked after 10 s (state D)" for waited " after 10 s"."""
        out = self.poll(0.0)
        ok, why = judge(out, want, clean, describe)
        return ok, why if out is not None else f"{why}{waited} (state {self.state()})"

    def _close(self) -> None:
        for fd in (self.rfd, self.gate_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.rfd = self.gate_fd = -1


def judge(out: dict | None, want: object, clean: tuple[int, ...],
          describe: Callable[[object], str] | None = None) -> tuple[bool, str]:
    """A client's outcome (Client.poll) against what a clean kernel gives: its value == want,
    or an error whose errno is in clean. Returns (clean?, what the client saw); describe names
    a wrong value (default: its first 80 characters)."""
    if out is None:
        return False, "the client is still blocked"
    if out.get("ok"):
        if out["value"] == want:
            return True, "the client succeeded with the right value"
        return False, "the client succeeded WITH A WRONG VALUE: " + (
            describe(out["value"]) if describe else str(out["value"])[:80])
    code = out.get("errno")
    name = errno.errorcode.get(code, str(code)) if code else out.get("error", "?")
    return code in clean, f"the client failed with {name}" + (" (killed: an oops?)" if code is None else "")


def wait_all(clients: list[Client], timeout: float) -> bool:
    """True when every client finished within timeout."""
    end = time.monotonic() + timeout
    return all(c.poll(max(0.0, end - time.monotonic())) is not None for c in clients)


def read_file(path: str) -> str:
    """Client op: the file's content (hex digest-free: short files only)."""
    with open(path, "rb") as f:
        return f.read().decode("latin-1")


def stat_size(path: str) -> int:
    return os.stat(path).st_size
