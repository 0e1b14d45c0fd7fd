"""The resident guest runner (guest/runner.py), run here on the host over a real socket, and
the host's side of it (which commands go to it, how its frames are read)."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time

import pytest

from harness.config import REPO
from harness.vm.control import runner_request, take_frames


def test_runner_request_takes_plain_guest_commands():
    cmd = "cd /src/fuse-harness && FUSE_HARNESS_TIME_SCALE=3 /usr/bin/python3 -m guest edge no-sqe128 --transport iovec"
    assert runner_request(cmd) == {"argv": ["edge", "no-sqe128", "--transport", "iovec"],
                                   "env": {"FUSE_HARNESS_TIME_SCALE": "3"}, "cwd": "/src/fuse-harness"}
    assert runner_request("cd '/a b' && /usr/bin/python3 -m guest probe")["cwd"] == "/a b"


@pytest.mark.parametrize("cmd", [
    "dmesg",
    "cd /x && /usr/bin/python3 -m guest probe | head",
    "cd /x && /usr/bin/python3 -m guest probe > /tmp/out",
    "cd /x && /usr/bin/python3 -m guest edge $(cat list)",
    "cd /x && /usr/bin/python3 -m guest probe; reboot",
    "/usr/bin/python3 -m guest probe",
])
def test_shell_syntax_stays_with_the_shell(cmd):
    assert runner_request(cmd) is None


def test_take_frames_keeps_a_partial_frame():
    buf = bytearray(b"O\x00\x00\x00\x03abcE\x00\x00\x00\x01eX\x00\x00\x00\x011X\x00\x00")
    assert take_frames(buf) == [(b"O", b"abc"), (b"E", b"e"), (b"X", b"1")]
    assert buf == b"X\x00\x00"


@pytest.fixture(scope="module")
def runner():
    """The runner as the boot script starts it (harness.vm.control.runner_command): no site."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-S", "-m", "guest.runner", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert "listening" in proc.stdout.readline()
    yield port
    proc.kill()
    proc.wait()


def ask(port: int, req: dict, hang_up_after: float | None = None) -> tuple[dict, float]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(json.dumps(req).encode() + b"\n")
        if hang_up_after is not None:
            time.sleep(hang_up_after)
            return {}, time.monotonic() - t0
        buf, out = bytearray(), {b"O": b"", b"E": b"", b"X": None}
        while out[b"X"] is None:
            data = s.recv(65536)
            assert data, "runner closed the connection without an exit frame"
            buf += data
            for kind, payload in take_frames(buf):
                out[kind] = payload if kind == b"X" else out[kind] + payload
    return {"rc": int(out[b"X"]), "out": out[b"O"].decode(), "err": out[b"E"].decode()}, time.monotonic() - t0


def test_runner_runs_a_command_with_its_exit_code_and_streams(runner):
    res, _ = ask(runner, {"argv": ["edge", "list"], "env": {}, "cwd": str(REPO)})
    assert res["rc"] == 0
    assert "request-timeout" in res["out"] and "no-sqe128" in res["out"]
    res, _ = ask(runner, {"argv": ["edge", "no-such-scenario"], "env": {}, "cwd": str(REPO)})
    assert res["rc"] == 2 and "invalid choice" in res["err"]


def test_runner_passes_env_and_cwd(runner, tmp_path):
    res, _ = ask(runner, {"argv": ["check", "--transport", "legacy", "--list"], "env": {"X": "1"},
                          "cwd": str(tmp_path)})
    assert res["rc"] == 0 and "legacy.no_leaks" in res["out"]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_hanging_up_kills_the_command(runner):
    """The host's timeout closes the channel: the command's process group dies. The long
    command here is a second runner (it listens on its own port until killed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        inner = s.getsockname()[1]
    conn = socket.create_connection(("127.0.0.1", runner))
    conn.sendall(json.dumps({"argv": ["runner", "--port", str(inner)], "env": {}, "cwd": str(REPO)}).encode()
                 + b"\n")
    end = time.monotonic() + 20
    while not _listening(inner):
        assert time.monotonic() < end, "the command never started"
        time.sleep(0.1)
    conn.close()
    end = time.monotonic() + 10
    while _listening(inner):
        assert time.monotonic() < end, "the command outlived the connection"
        time.sleep(0.1)
    res, _ = ask(runner, {"argv": ["probe", "--help"], "env": {}, "cwd": "/"})
    assert res["rc"] == 0


def test_runner_answers_before_its_preload_and_finishes_it():
    """The runner listens at once: a command sent right away runs (its child imports what it
    needs), and the runner still reports its preload done afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "guest", "runner", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in proc.stdout.readline()
        res, _ = ask(port, {"argv": ["edge", "list"], "env": {}, "cwd": str(REPO)})
        assert res["rc"] == 0 and "no-sqe128" in res["out"]
        assert select.select([proc.stdout], [], [], 60)[0], "no line from the runner after 60 s"
        assert proc.stdout.readline().strip() == "guest runner: preloaded"
        res, _ = ask(port, {"argv": ["probe", "--help"], "env": {}, "cwd": "/"})
        assert res["rc"] == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_server_child_is_a_fork_running_the_guest_cli(tmp_path):
    """ServerProc's Child runs `python3 -m guest serve ARGV` (or the main it is given: the
    whole CLI) in a fork of this process: its output goes to the log, its exit code comes
    back (argparse's too), this process's other file descriptors are not its (a pipe's write
    end closed here reaches EOF while it runs)."""
    import os
    import time

    from guest.__main__ import main as guest_cli
    from guest.checks.server_proc import Child

    log = tmp_path / "server.log"
    child = Child(["--help"], str(log))
    assert child.wait(30) == 0 and child.poll() == 0
    assert "usage: python3 -m guest" in log.read_text() and "{serve}" in log.read_text()
    assert Child(["serve", "--help"], str(log)).wait(30) == 0
    assert "--ready-file" in log.read_text()
    assert Child(["check", "--list"], str(log)).wait(30) == 2  # a server child serves, nothing else
    assert "invalid choice" in log.read_text()
    assert Child(["no-such-command"], str(log), guest_cli).wait(30) == 2
    assert "invalid choice" in log.read_text()

    r, w = os.pipe()
    resident = Child(["runner", "--port", "0"], str(log), guest_cli)  # listens until killed
    os.close(w)
    t0 = time.monotonic()
    assert os.read(r, 1) == b""  # EOF: the child did not keep the write end
    os.close(r)
    assert time.monotonic() - t0 < 5
    with pytest.raises(TimeoutError):
        resident.wait(0.5)
    assert resident.poll() is None
    resident.kill()
    assert resident.wait(30) == -9
