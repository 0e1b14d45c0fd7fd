"""`python3 -S -m guest.runner --port N` (or `python3 -m guest runner --port N`): a resident
process that runs `python3 -m guest ...` commands without starting Python again.

One runner per boot, started by the guest's boot script (harness/vm/guestsh.py keepalive)
or by the host over SSH, as `python3 -S -m guest.runner --port N`: no site, no argparse,
nothing but sockets imported before it listens (1.3-2.3 s after exec under TCG, against
2.5-4.2 s for `python3 -m guest runner`, measured warm in a guest). It listens at once on a
TCP port of the guest's loopback; the host
reaches it through the SSH connection it already has (a direct-tcpip channel), so no process
is spawned per command. Between connections it imports the guest package one module at a
time (every module a command may need: over 9p under TCG that is seconds per command), so
later commands find them loaded. Imports and forks happen in the one thread, never at once:
a fork while another thread holds the import lock could leave the child stuck. A command
that arrives before the imports are done imports what it needs itself.

Protocol, per connection: one JSON line `{"argv": [...], "env": {...}, "cwd": "..."}`,
answered by frames `kind(1 byte) length(4 bytes, big endian) data`: `O` stdout bytes, `E`
stderr bytes, then `X` with the exit code as ASCII. A command runs in a child forked from
the runner (its own session, the argv as `python3 -m guest` would get it); when the host
closes the connection first (its timeout), the child's process group is killed.
"""

from __future__ import annotations

import errno
import importlib
import os
import select
import signal
import socket
import struct
import sys
import time

TYPE_CHECKING = False  # not typing's: importing typing (and re) would delay the listen
if TYPE_CHECKING:
    from collections.abc import Iterator

#: Modules imported once in the runner, so forked commands find them loaded.
PRELOAD = ("guest.__main__", "guest.daemon", "guest.probe", "guest.checks.runner",
           "guest.edge.core", "guest.edge.served", "guest.edge.clients")
FRAME = struct.Struct(">cI")


#: Seconds serve() retries a port still held by a runner being replaced.
BIND_RETRY = 10.0


def preload_steps() -> Iterator[str]:
    """Import every guest module a command may need (the edge scenarios included), yielding
    the name of each one done."""
    import json  # noqa: F401 - every command's request is JSON (handle())

    yield "json"
    from guest import edge

    for name in PRELOAD + tuple(f"guest.edge.{s.module}" for s in edge.SCENARIOS.values()):
        importlib.import_module(name)
        yield name
    from guest.transports import base

    for name in base.supported():
        base.get(name)
        yield name


def preload() -> None:
    """All of preload_steps() at once."""
    for _ in preload_steps():
        pass


def _listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port; a runner being replaced (pkill) may hold the port
    a moment longer, so EADDRINUSE is retried for BIND_RETRY s."""
    end = time.monotonic() + BIND_RETRY
    while True:
        try:
            return socket.create_server(("127.0.0.1", port), reuse_port=False)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > end:
                raise
            time.sleep(0.2)


def _send(sock: socket.socket, kind: bytes, data: bytes) -> None:
    sock.sendall(FRAME.pack(kind, len(data)) + data)


def run_main(argv: list[str], out_fd: int, err_fd: int, cwd: str, env: dict | None = None) -> None:
    """In a forked child, never returns: `python3 -m guest ARGV` (guest.__main__.main, already
    imported here) with stdout and stderr on out_fd and err_fd (line-buffered), in cwd with env
    added, SIGCHLD at its default; the process exits with main's code (argparse's on a usage
    error, 1 after an uncaught exception, whose traceback goes to err_fd). Used for the
    runner's commands and for a check's server (guest.checks.server_proc.Child)."""
    rc = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.environ.update(env or {})
        os.chdir(cwd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        from guest.__main__ import main

        rc = int(main(list(argv)) or 0)
    except SystemExit as exc:  # argparse errors, explicit exits
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception would be
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def handle(conn: socket.socket) -> None:
    """One command on one connection (runs in a process forked per connection)."""
    import json

    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
    req = json.loads(buf)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os.close(out_r)
        os.close(err_r)
        try:
            os.setsid()  # the host's kill of a command ends its whole group
        finally:
            run_main(req["argv"], out_w, err_w, req.get("cwd") or "/", req.get("env"))
    os.close(out_w)
    os.close(err_w)
    open_fds = {out_r: b"O", err_r: b"E"}
    try:
        while open_fds:
            ready, _, _ = select.select([*open_fds, conn], [], [])
            if conn in ready and not conn.recv(1, socket.MSG_PEEK):
                raise ConnectionAbortedError("the host hung up")
            for fd in ready:
                if fd is conn:
                    continue
                data = os.read(fd, 65536)
                if data:
                    _send(conn, open_fds[fd], data)
                else:
                    os.close(fd)
                    del open_fds[fd]
        _, status = os.waitpid(pid, 0)
        _send(conn, b"X", str(os.waitstatus_to_exitcode(status)).encode())
    except OSError:  # the host gave up (its timeout) or the connection broke: end the command
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def serve(port: int) -> int:
    """Listen on 127.0.0.1:port, fork a handler per connection and preload between
    connections; never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers reap themselves away
    srv = _listen(port)
    print(f"guest runner: listening on 127.0.0.1:{port}", flush=True)
    steps: Iterator[str] | None = preload_steps()
    while True:
        if steps is not None and not select.select([srv], [], [], 0)[0]:
            try:
                if next(steps, None) is None:
                    steps = None
                    print("guest runner: preloaded", flush=True)
            except Exception as exc:  # noqa: BLE001 - a command that needs the module reports it
                steps = None
                print(f"guest runner: preload stopped: {exc!r}", file=sys.stderr, flush=True)
            continue
        conn, _ = srv.accept()
        if os.fork() == 0:
            srv.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                handle(conn)
            finally:
                os._exit(0)
        conn.close()


if __name__ == "__main__":  # `python3 -S -m guest.runner --port N`: see the module docstring
    if len(sys.argv) != 3 or sys.argv[1] != "--port" or not sys.argv[2].isdigit():
        sys.exit("usage: python3 -S -m guest.runner --port N")
    serve(int(sys.argv[2]))
