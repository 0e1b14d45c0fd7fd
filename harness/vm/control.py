"""Drive a running guest over SSH with paramiko: exec with timeouts, copy files."""

from __future__ import annotations

import logging
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


class Guest:
    """An SSH session to the guest on 127.0.0.1:port."""

    def __init__(self, port: int, user: str = "root", key_path: Path = KEY_PATH) -> None:
        self.port = port
        self.user = user
        self.key_path = key_path
        self.client: paramiko.SSHClient | None = None

    def connect(self, deadline: float, alive: Callable[[], bool] = lambda: True) -> None:
        """Retry until sshd answers or the monotonic deadline passes (sshd needs ~15 s under TCG)."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not alive():
                raise VmError("the VM exited before SSH came up")
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
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
                time.sleep(1)
        raise VmError(f"SSH to the guest did not come up in time ({last})",
                      hint="see the console log; under TCG sshd needs ~15 s")

    def _ensure(self) -> paramiko.SSHClient:
        if self.client is None:
            raise VmError("not connected to the guest")
        return self.client

    def run(self, cmd: str, timeout: float = 300.0, stdin: str | None = None) -> CommandResult:
        """Run cmd in the guest's shell; never raises on failure, reports it."""
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
        return CommandResult(cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - start, timed_out, lost)

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
        if self.client is not None:
            self.client.close()
            self.client = None
