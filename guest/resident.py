"""The resident guest runner's machinery: listen, preload, and run each command in a child
forked per connection. How it starts and the protocol it speaks: guest/runner.py.

The command a child runs is the guest CLI's main, handed in (serve(port, main)): this module
never imports the CLI, which starts it (`python3 -m guest runner`) beside guest/runner.py.
run_main is also how a check forks its server (guest.checks.server_proc).
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
    from collections.abc import Callable, Iterator

    #: A CLI's main: argv -> exit code.
    Main = Callable[[list[str]], int]

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


def run_main(main: Main, argv: list[str], out_fd: int, err_fd: int, cwd: str, env: dict | None = None) -> None:
    """In a forked child, never returns: main(ARGV) (the guest CLI's, `python3 -m guest ARGV`,
    or a part of it, already imported here) with stdout and stderr on out_fd and err_fd (line-buffered), in cwd with env
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


def handle(conn: socket.socket, main: Main) -> None:
    """One command on one connection (runs in a process forked per connection): main(argv)."""
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
            run_main(main, req["argv"], out_w, err_w, req.get("cwd") or "/", req.get("env"))
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


def serve(port: int, main: Main) -> int:
    """Listen on 127.0.0.1:port, fork a handler per connection, which runs main(argv) of the
    command it is sent (the guest CLI's), and preload between connections; never returns."""
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
                handle(conn, main)
            finally:
                os._exit(0)
        conn.close()

