"""Zero-copy specific cases that need their own server."""

from __future__ import annotations

import os
import shutil
import tempfile

from guest import mount as M
from guest.checks.context import Ctx, Skip, expect
from guest.checks.server_proc import ServerProc

NOBODY = 65534


def zero_copy_unprivileged_eperm(ctx: Ctx) -> None:
    """A server without CAP_SYS_ADMIN asking for zero-copy gets EPERM: at ADD_QUEUE
    (generation C) or at the first REGISTER with FUSE_URING_ZERO_COPY (generation D)."""
    if os.geteuid() != 0:
        raise Skip("needs root to mount before dropping privileges")
    work = tempfile.mkdtemp(prefix="fh-eperm-", dir="/tmp")
    mnt, backing = os.path.join(work, "mnt"), os.path.join(work, "backing")
    for d in (mnt, backing):
        os.mkdir(d)
    for d in (work, mnt, backing):
        os.chmod(d, 0o777)
    srv = ServerProc(work, mnt, ctx.transport, ["--backend", "passthrough", "--backing",
                                              backing, "--drop-uid", str(NOBODY)])
    try:
        try:
            srv.start(timeout=60)
            started = True
        except RuntimeError as exc:
            started = False
            ctx.diag(f"server refused as expected: {str(exc)[:200]}")
        if started:
            srv.stop()
        c = srv.counters()
        expect(c is not None, f"no counters; log: {srv.log_tail()}")
        err = c["setup_error"] or {}
        expect(not started, "unprivileged zero-copy server became ready")
        expect(srv.returncode == 3, f"exit code {srv.returncode}, want 3")
        step = "ADD_QUEUE" if ctx.transport == "zero-copy" else "REGISTER"
        expect(err.get("step") == step and err.get("errno") == "EPERM", f"setup_error {err}")
        expect(c["paths"]["io_uring"] == 0, f"paths {c['paths']}")
    finally:
        M.teardown(mnt)
        if not M.is_mounted(mnt):
            shutil.rmtree(work, ignore_errors=True)
