"""Generation D: kmbuf buffers are charged to RLIMIT_MEMLOCK and uncharged again.

Run in a child without CAP_IPC_LOCK (root is exempt from the limit)."""

from __future__ import annotations

import errno
import os
import resource
import time

from guest.edge.core import Ctx
from guest.edge.kmbuf import skip_all_without_d
from guest.transports.kmbuf import BGID
from guest.uring.ring import Ring

NOBODY = 65534


def _memlock_child(cycles: int, how: str, w: int) -> None:
    """In a child without CAP_IPC_LOCK: cycles of a 4 x 128 KiB kmbuf ring under a 1 MiB
    RLIMIT_MEMLOCK, then one 1 MiB ring that fits only if every cycle was uncharged."""
    out = []
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (1 << 20, 1 << 20))
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        status, waited = _vm_status(), 0.0
        for i in range(cycles):
            r = Ring(4)
            got, secs = _register_patiently(r, 128 << 10)
            waited += secs
            if got != "ok":
                out.append(f"cycle {i + 1} of {cycles}: {got} after {secs:.1f}s;")
                break
            if how == "unregister":
                r.unregister_kmbuf_ring(BGID)
            r.close()
        else:
            r = Ring(4)
            final, secs = _register_patiently(r, 256 << 10)
            out.append(f"final={final} after {secs:.2f}s (waits in the cycles {waited:.1f}s)")
            r.close()
        out.append(f"before={status} after={_vm_status()}")
    except OSError as exc:
        out.append(f"error={exc}")
    os.write(w, " ".join(out).encode())
    os._exit(0)


def _register_patiently(r: Ring, buf_size: int) -> tuple[str, float]:
    """A 4-buffer kmbuf ring; ENOMEM is retried for 10 s, because a closed ring's exit (and
    its uncharge) runs later in a kernel worker. ("ok" or the errno name, seconds waited)."""
    t0 = time.monotonic()
    while True:
        try:
            r.register_kmbuf_ring(BGID, buf_size, 4)
            return "ok", time.monotonic() - t0
        except OSError as exc:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            if exc.errno != errno.ENOMEM or time.monotonic() - t0 > 10.0:
                return name, time.monotonic() - t0
            time.sleep(0.25)


def _vm_status() -> str:
    with open("/proc/self/status") as f:
        return ",".join(ln.split()[0] + ln.split()[1] for ln in f if ln.startswith(("VmLck", "VmPin")))


def memlock(ctx: Ctx, args) -> None:  # noqa: ANN001
    """kmbuf buffers are charged to RLIMIT_MEMLOCK and uncharged on unregister and ring exit."""
    if not skip_all_without_d(ctx):
        return
    for how, case in (("unregister", "unregister_cycles_uncharged"), ("close", "close_cycles_uncharged")):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _memlock_child(max(8, args.iterations), how, w)
        os.close(w)
        ctx.pids.append(pid)
        got = b""
        end = time.monotonic() + min(30.0, ctx.left())
        while time.monotonic() < end:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            got += chunk
        os.close(r)
        text = got.decode()
        ctx.result(case, "final=ok" in text, f"{how} x{max(8, args.iterations)} under a 1 MiB "
                   f"RLIMIT_MEMLOCK, then a 1 MiB ring: {text or 'no answer'}")
