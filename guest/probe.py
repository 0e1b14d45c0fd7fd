"""`probe`: what the running kernel offers, as JSON on stdout.

Mounts a throw-away FUSE file system under /tmp, reads INIT, and (when
io_uring is offered) sends one ADD_QUEUE as a harmless generation probe:
0 on generation C (7.3), -EINVAL on A (7.2). Never probes with REGISTER.
The mount is aborted and detached before anything can touch it.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile

from guest import mount as M
from guest.fuse import proto as P
from guest.negotiate import negotiate
from guest.transports.kmbuf import kmbuf_supported


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _add_queue_probe(fd: int, init_max_payload: int) -> int | None:
    """Result of ADD_QUEUE(qid 0) on a fresh connection, or None if unavailable."""
    from guest.transports.engine import CMD_REQ, SETUP, ud
    from guest.uring.ring import Ring
    try:
        ring = Ring(8)
    except OSError:
        return None
    try:
        ring.prep_uring_cmd(fd, P.URING_CMD_ADD_QUEUE, ud(SETUP), CMD_REQ.pack(0, 0, 0, b"",
                                                                             0, 0, 0))
        while True:
            ring.submit(wait_nr=1)
            for _, res, _ in ring.reap():
                return res
    finally:
        ring.close()


def probe() -> dict:
    """Mount, look at INIT, probe ADD_QUEUE, tear down; return the findings."""
    out: dict = {"enable_uring": _read("/sys/module/fuse/parameters/enable_uring"),
                 "io_uring_disabled": _read("/proc/sys/kernel/io_uring_disabled"),
                 "euid": os.geteuid(), "kernel": os.uname().release}
    work = tempfile.mkdtemp(prefix="fh-probe-", dir="/tmp")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    fd = M.open_dev()
    try:
        M.mount(fd, mnt)
        h, arg0, _ = P.split_devfuse(os.read(fd, 1 << 20))
        major, minor, _, flags, flags2 = P.INIT_IN.unpack(arg0)[:5]
        offered = bool(flags2 & (P.OVER_IO_URING >> 32))
        bufpool = bool(flags2 & (P.HAS_IO_URING_BUFPOOL >> 32))
        payload, init = negotiate(arg0, offered, 131072, None)
        os.write(fd, P.pack_devfuse_reply(h.unique, 0, payload))
        res = _add_queue_probe(fd, init.max_payload_sz) if offered else None
        gen = None
        if res == 0 or bufpool:
            gen = "C"
        elif res == -errno.EINVAL:
            gen = "A"
        transports = ["legacy"]
        if offered and res is not None:
            transports.append("iovec")
        if gen == "C":
            transports += ["bufpool", "bufpool-registered"]
            if os.geteuid() == 0:
                transports.append("zero-copy")
        elif gen == "A" and kmbuf_supported() is None:  # INIT cannot tell D from A
            gen = "D"
            transports.append("kmbuf")
            if os.geteuid() == 0:
                transports.append("kmbuf-zero-copy")
        out.update(major=major, minor=minor, flags=flags, flags2=flags2,
                   over_io_uring=offered, has_bufpool=bufpool,
                   add_queue_res=res, generation=gen, transports=transports)
    finally:
        M.teardown(mnt)
        os.close(fd)
        try:
            os.rmdir(mnt)
            os.rmdir(work)
        except OSError:
            pass
    return out


def main() -> int:
    """Print the probe JSON; exit 0 (3 if the probe itself failed)."""
    try:
        doc = probe()
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 3
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0
