"""`serve`: mount, answer INIT, set up the transport, serve, report, unmount.

Exit codes: 0 served until unmount/SIGTERM; 3 setup failed (counters say why).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass

from guest import mount as M
from guest.counters import Counters
from guest.devfuse import DevFuseReader
from guest.fuse import proto as P
from guest.fuse.fs import MemoryFs
from guest.fuse.passthrough import PassthroughFs
from guest.negotiate import negotiate
from guest.server import Server
from guest.transports import base

EXIT_OK, EXIT_SETUP = 0, 3


@dataclass
class ServeArgs:
    """Everything `serve` needs (mirrors the CLI)."""

    mount: str
    transport: str
    backend: str = "memory"
    backing: str | None = None
    queue_depth: int = 4
    pool_bufs: int = 4
    buf_size: int = 0
    max_write: int = 131072
    max_pages: int | None = None
    delay_ms: float = 0.0
    ready_file: str | None = None
    counters: str | None = None
    fallback: bool = False
    drop_uid: int | None = None
    direct_io: bool = False


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"I: serve[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def make_fs(a: ServeArgs) -> MemoryFs | PassthroughFs:
    """The backend named by the arguments."""
    if a.backend == "passthrough":
        if not a.backing:
            raise ValueError("--backend passthrough needs --backing DIR")
        return PassthroughFs(a.backing)
    return MemoryFs()


def drop_privileges(uid: int) -> None:
    """setgid/setuid to uid (loses CAP_SYS_ADMIN)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _write_json(path: str | None, doc: dict) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)


def serve(a: ServeArgs) -> int:
    """Run the server in the foreground; see the module docstring."""
    cls = base.get(a.transport)
    counters = Counters(a.transport)
    fs = make_fs(a)
    if cls.zero_copy and cls.needs_bufpool and not isinstance(fs, PassthroughFs):
        raise ValueError("zero-copy needs --backend passthrough --backing DIR")
    fd = M.open_dev()
    M.mount(fd, a.mount)
    log(f"mounted {a.mount} (transport {a.transport})")
    rc = EXIT_OK
    try:
        init_buf = os.read(fd, 1 << 20)
        h, arg0, _ = P.split_devfuse(init_buf)
        if h.opcode != P.Op.INIT:
            raise RuntimeError(f"first request is {P.op_name(h.opcode)}, not INIT")
        major, minor, _, kflags, kflags2 = P.INIT_IN.unpack(arg0)[:5]
        gen_c = bool(kflags2 & (P.HAS_IO_URING_BUFPOOL >> 32))
        offered = bool(kflags2 & (P.OVER_IO_URING >> 32))
        counters.doc["generation"] = "C" if gen_c else ("A" if offered else None)
        want = cls.uses_uring and offered and (gen_c or not cls.needs_bufpool)
        payload, init = negotiate(arg0, want, a.max_write, a.max_pages)
        counters.doc["init"] = init.report()
        if cls.uses_uring and not want:
            why = ("kernel did not offer FUSE_OVER_IO_URING (enable_uring off?)"
                   if not offered else "kernel lacks FUSE_HAS_IO_URING_BUFPOOL")
            counters.doc["setup_error"] = {"step": "INIT", "errno": None, "message": why}
            log(f"setup: {why}")
        os.write(fd, P.pack_devfuse_reply(h.unique, 0, payload))
        counters.request("devfuse", "INIT")
        log(f"INIT: kernel 7.{minor} flags={kflags:#x} flags2={kflags2:#x}; "
            f"uring={init.over_io_uring} max_payload_sz={init.max_payload_sz}")
        if a.drop_uid is not None:
            drop_privileges(a.drop_uid)
        server = Server(fs, counters, zero_copy_open=cls.zero_copy and cls.needs_bufpool,
                        direct_io=a.direct_io)
        opts = base.Options(a.queue_depth, a.pool_bufs, a.delay_ms / 1000.0, a.buf_size)
        legacy = base.get("legacy")
        transport = legacy(fd, server, counters, init, opts)
        if not cls.uses_uring:
            transport = cls(fd, server, counters, init, opts)
        elif want:
            ring = None
            try:
                ring = cls(fd, server, counters, init, opts)
                ring.start()
                transport = ring
            except OSError as exc:  # io_uring_setup/mmap refused (io_uring_disabled?)
                err = base.SetupError("io_uring_setup", exc.errno or 5)
                log(str(err))
                counters.doc["setup_error"] = err.report()
            except base.SetupError as exc:
                log(str(exc))
                counters.doc["setup_error"] = exc.report()
            if counters.doc["setup_error"] is not None:
                if ring is not None:  # one bad REGISTER before ready: /dev/fuse fallback
                    ring.poison()
                else:  # io_uring is on but can never get ready: do not leave it hanging
                    M.abort(a.mount)
        if counters.doc["setup_error"] is not None:
            counters.doc["fallback"] = True
            if not a.fallback:
                counters.doc["exit_reason"] = "setup failed: " + counters.doc["setup_error"][
                    "message"]
                return EXIT_SETUP
        bufsize = max(init.max_payload_sz, init.max_write) + 8192
        reader = DevFuseReader(fd, server, counters, bufsize, a.delay_ms / 1000.0,
                               on_exit=transport.device_gone)
        reader.start()

        def on_term(signum: int, frame: object) -> None:
            transport.request_stop()

        def on_usr1(signum: int, frame: object) -> None:
            counters.write(a.counters)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGUSR1, on_usr1)
        if hasattr(transport, "on_stop"):
            transport.on_stop = lambda: _unmount(a.mount)
        ready = counters.snapshot()
        ready.update(ready=True, mount=a.mount)
        _write_json(a.ready_file, ready)
        log(f"ready: {counters.doc['uring']}")
        transport.run()
        if not hasattr(transport, "on_stop"):
            _unmount(a.mount)
        reader.join(2.0)
        if counters.doc["exit_reason"] is None:
            counters.doc["exit_reason"] = "device closed"
        return rc
    finally:
        if M.is_mounted(a.mount):
            M.teardown(a.mount)
        counters.write(a.counters)
        os.close(fd)


def _unmount(target: str) -> None:
    """Unmount our own mount on SIGTERM: plain first, lazy when busy."""
    try:
        M.umount(target)
    except OSError:
        try:
            M.umount(target, M.MNT_DETACH)
        except OSError:
            M.abort(target)
