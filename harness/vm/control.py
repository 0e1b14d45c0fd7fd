"""Drive a running guest over SSH with paramiko: exec with timeouts, copy files."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import VmError

log = logging.getLogger(__name__)
# paramiko logs a traceback for every refused connection while sshd is still starting.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

KEY_PATH = Path.home() / ".cache" / "virtme-ng" / ".ssh" / "id_virtme"
#: pkill -f pattern of a guest runner's command line, this release's (`-m guest.runner`) or an
#: older one's (`-m guest runner`), which does not match itself.
RUNNER_PATTERN = "guest[ .][r]unner"
#: Loopback port of the resident guest runner (guest/runner.py) inside the guest.
RUNNER_PORT = 7377
#: `cd DIR && [VAR=value ...] [exec] /usr/bin/python3 -m guest ARGS`: what the runner can run.
_GUEST_CMD = re.compile(r"cd (?P<cwd>'[^']*'|\S+) && (?P<env>(?:[A-Za-z_][A-Za-z0-9_]*=\S+ )*)(?:exec )?"
                        r"/usr/bin/python3 -m guest (?P<args>.*)", re.S)
_FRAME = struct.Struct(">cI")


def runner_request(cmd: str) -> dict | None:
    """The runner request {argv, env, cwd} for a plain `python3 -m guest` command line, or None
    when cmd is anything else (a pipeline, redirections, other programs: the shell runs it)."""
    m = _GUEST_CMD.fullmatch(cmd.strip())
    if m is None or any(ch in m["args"] for ch in ";|&<>`$()\n"):
        return None
    try:
        (cwd,) = shlex.split(m["cwd"])
        env = dict(kv.split("=", 1) for kv in shlex.split(m["env"]))
        argv = shlex.split(m["args"])
    except ValueError:
        return None
    return {"argv": argv, "env": env, "cwd": cwd}


def take_frames(buf: bytearray) -> list[tuple[bytes, bytes]]:
    """Remove the complete runner frames at the start of buf: [(kind, payload)] where kind is
    b"O" (stdout), b"E" (stderr) or b"X" (exit code, ASCII); see guest/runner.py."""
    out = []
    while len(buf) >= _FRAME.size:
        kind, n = _FRAME.unpack_from(buf)
        if len(buf) < _FRAME.size + n:
            break
        out.append((kind, bytes(buf[_FRAME.size:_FRAME.size + n])))
        del buf[:_FRAME.size + n]
    return out


@dataclass
class CommandResult:
    """What one guest command did."""

    cmd: str
    rc: int | None  # None when it timed out or the connection died
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    lost: bool = False  # the connection dropped (guest died?)

    @property
    def ok(self) -> bool:
        return self.rc == 0


#: Seconds a `python3 -m guest` command waits for a runner that is still starting (it listens
#: once Python and guest/runner.py are loaded: about a second under TCG, more on a debug kernel).
RUNNER_WAIT = 45.0
#: Where the guest keeps the code stamp of the runner it started.
RUNNER_STAMP = "/tmp/fh-runner.stamp"


def code_stamp(repo: Path) -> str:
    """12 hex digits naming this checkout's guest code: its path and every guest/*.py file's
    name, size and mtime (an edit, a pull or another checkout changes it)."""
    h = hashlib.sha256(str(repo.resolve()).encode())
    for f in sorted((repo / "guest").rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(repo)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


#: The guest's interpreter: the guest's root file system is the host's (virtme-ng), so this
#: very binary runs the guest package there.
GUEST_PYTHON = "/usr/bin/python3"


def byte_compile(repo: Path) -> bool:
    """Write guest/**/__pycache__/*.pyc with the guest's interpreter, on the host: the guest
    sees the checkout read-only over 9p, so without them every guest Python start compiles
    every module it imports (4-7 s of the runner's start under TCG). Up-to-date files are
    left alone; False (and nothing raised) when the checkout is not writable."""
    try:
        proc = subprocess.run([GUEST_PYTHON, "-m", "compileall", "-q", "-j0", str(repo / "guest")],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("guest code not byte-compiled: %s", exc)
        return False
    if proc.returncode != 0:
        log.debug("guest code not byte-compiled: %s", (proc.stdout + proc.stderr).strip()[-300:])
    return proc.returncode == 0


def runner_enabled() -> bool:
    """Whether commands go to the resident guest runner (FUSE_HARNESS_RUNNER=0: never)."""
    return os.environ.get("FUSE_HARNESS_RUNNER", "1") != "0"


def runner_command(repo: Path, stamp: str | None = None) -> str:
    """The guest shell command that starts the runner of this checkout in the background and
    writes its code stamp (code_stamp, unless given) to RUNNER_STAMP (from the boot script, or
    over SSH)."""
    return (f"echo {stamp or code_stamp(repo)} > {RUNNER_STAMP}; cd {shlex.quote(str(repo))} && "
            f"nohup {GUEST_PYTHON} -S -m guest.runner --port {RUNNER_PORT} "
            "> /tmp/fh-runner.log 2>&1 < /dev/null &")


class Guest:
    """An SSH session to the guest on 127.0.0.1:port."""

    def __init__(self, port: int, user: str = "root", key_path: Path = KEY_PATH) -> None:
        self.port = port
        self.user = user
        self.key_path = key_path
        self.client: paramiko.SSHClient | None = None
        self.runner = False  # the resident guest runner answered on RUNNER_PORT
        self.runner_deadline = 0.0  # until then, a runner that does not answer may be starting
        self.runner_waited = False  # the first command of a boot waited for a starting runner

    def connect(self, deadline: float, alive: Callable[[], bool] = lambda: True) -> None:
        """Retry until sshd answers or the monotonic deadline passes (sshd needs ~15 s under TCG)."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not alive():
                raise VmError("the VM exited before SSH came up")
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            tried = time.monotonic()
            try:
                client.connect(
                    "127.0.0.1", port=self.port, username=self.user, key_filename=str(self.key_path),
                    timeout=10, banner_timeout=30, auth_timeout=30, look_for_keys=False, allow_agent=False,
                )
                self.client = client
                transport = client.get_transport()
                if transport is not None:
                    transport.set_keepalive(5)
                return
            except (paramiko.SSHException, OSError, EOFError) as exc:
                last = exc
                client.close()
                log.debug("ssh: no answer yet (%s after %.1f s)", type(exc).__name__,
                          time.monotonic() - tried)
                time.sleep(0.5)  # a refused or reset try costs ~0 s: poll often
        raise VmError(f"SSH to the guest did not come up in time ({last})",
                      hint="see the console log; under TCG sshd needs ~15 s")

    def _ensure(self) -> paramiko.SSHClient:
        if self.client is None:
            raise VmError("not connected to the guest")
        return self.client

    def start_runner(self, repo: Path, give_up_after: float, reuse: bool = False,
                     started: bool = False) -> None:
        """Start the resident guest runner (guest/runner.py) in the background, unless
        FUSE_HARNESS_RUNNER=0. Commands go through the shell until it answers (it listens as
        soon as it has started and imports the rest between commands); if it has not answered
        give_up_after seconds from now, the shell keeps them. reuse (a kept guest): a
        runner already started from this checkout's unchanged guest code (code_stamp) is kept,
        any other is replaced. started: this boot's script started this checkout's runner
        (runner_command), so nothing is checked: the first SSH command of a boot costs ~2 s
        under TCG."""
        if not runner_enabled():
            return
        self.runner_deadline = time.monotonic() + give_up_after
        self.runner_waited = False
        if started:
            return
        stamp = code_stamp(repo)
        if reuse and self.run(f"grep -qx {stamp} {RUNNER_STAMP}", timeout=20).ok:
            return
        if reuse:  # its own command: the pattern must not meet the runner's command line below
            self.run(f"pkill -f '{RUNNER_PATTERN}'; true", timeout=20)
        byte_compile(repo)  # only for a runner that starts: a kept one has its modules loaded
        self.run(runner_command(repo, stamp), timeout=30)

    def run(self, cmd: str, timeout: float = 300.0, stdin: str | None = None) -> CommandResult:
        """Run cmd in the guest's shell (or, for a `python3 -m guest` command while the runner is
        up, in the runner); never raises on failure, reports it."""
        waiting = not self.runner and time.monotonic() < self.runner_deadline
        req = runner_request(cmd) if (self.runner or waiting) and stdin is None else None
        if req is not None:
            result = self._run_in_runner(cmd, req, timeout)
            if result is None and waiting and not self.runner_waited:
                self.runner_waited = True
                result = self._wait_for_runner(cmd, req, timeout)
            if result is not None:
                if not self.runner:
                    log.info("guest runner: up, `python3 -m guest` commands go to it")
                self.runner = True
                return result
        client = self._ensure()
        start = time.monotonic()
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("transport inactive")
            chan = transport.open_session(timeout=10)
            chan.exec_command(cmd)
            if stdin is not None:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return CommandResult(cmd, None, "", f"connection lost: {exc}", time.monotonic() - start, lost=True)
        out, err = bytearray(), bytearray()
        chan.settimeout(0.5)
        deadline = start + timeout
        timed_out = lost = False
        while True:
            try:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
            except (TimeoutError, OSError):
                pass
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if not transport.is_active():
                lost = True
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.02)
        rc = None if (timed_out or lost) else chan.recv_exit_status()
        chan.close()
        log.debug("guest shell: rc %s after %.2f s: %.70s", rc, time.monotonic() - start, cmd)
        return CommandResult(cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - start, timed_out, lost)

    def _wait_for_runner(self, cmd: str, req: dict, timeout: float) -> CommandResult | None:
        """The runner is still starting: the first command waits for it up to RUNNER_WAIT s
        rather than run in the shell, which costs more (Python and the package over 9p) and
        slows the runner's own start on a 2-vCPU guest; every later command then takes the fast
        path. Past that, commands use the shell until the runner answers, as before."""
        until = min(self.runner_deadline, time.monotonic() + RUNNER_WAIT)
        while time.monotonic() < until:
            time.sleep(0.5)
            result = self._run_in_runner(cmd, req, timeout)
            if result is not None:
                return result
        log.info("guest runner: not listening after %.0f s; the shell runs commands until it is",
                 RUNNER_WAIT)
        return None

    def _run_in_runner(self, cmd: str, req: dict, timeout: float) -> CommandResult | None:
        """cmd through the runner (a direct-tcpip channel of the SSH connection); None when the
        runner cannot be reached (the caller falls back to the shell)."""
        import json

        start = time.monotonic()
        transport = self._ensure().get_transport()
        if transport is None or not transport.is_active():
            return CommandResult(cmd, None, "", "connection lost: transport inactive", 0.0, lost=True)
        try:
            chan = transport.open_channel("direct-tcpip", ("127.0.0.1", RUNNER_PORT), ("127.0.0.1", 0),
                                          timeout=10)
            chan.sendall(json.dumps(req).encode() + b"\n")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if self.runner:
                log.warning("guest runner unreachable (%s); back to the shell", exc)
                self.runner_deadline = 0.0
            self.runner = False
            return None
        streams = {b"O": bytearray(), b"E": bytearray()}
        buf, rc, timed_out, lost = bytearray(), None, False, False
        chan.settimeout(0.5)
        deadline = start + timeout
        while rc is None:
            try:
                data = chan.recv(65536)
                if not data:
                    lost = True  # the runner's handler died, or the guest did
                    break
                buf += data
            except (TimeoutError, OSError):
                pass
            for kind, payload in take_frames(buf):
                if kind == b"X":
                    rc = int(payload)
                else:
                    streams[kind] += payload
            if rc is None and not transport.is_active():
                lost = True
                break
            if rc is None and time.monotonic() > deadline:
                timed_out = True
                break
        chan.close()  # on a timeout this kills the command's process group in the guest
        log.debug("guest runner: rc %s after %.2f s: %.70s", rc, time.monotonic() - start, cmd)
        return CommandResult(cmd, rc, streams[b"O"].decode(errors="replace"),
                             streams[b"E"].decode(errors="replace"), time.monotonic() - start,
                             timed_out, lost)

    def put(self, local: Path, remote: str) -> None:
        with self._ensure().open_sftp() as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        with self._ensure().open_sftp() as sftp:
            sftp.get(remote, str(local))

    def read_text(self, remote: str) -> str:
        with self._ensure().open_sftp() as sftp, sftp.open(remote) as f:
            return f.read().decode(errors="replace")

    def close(self) -> None:
        self.runner, self.runner_deadline = False, 0.0
        if self.client is not None:
            self.client.close()
            self.client = None
