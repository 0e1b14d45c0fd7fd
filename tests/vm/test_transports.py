"""Every transport serves real clients in the guest, and the server's counters prove the path.

A transport the target promises must work: it is never skipped here. The guest's own KTAP
cases become subtests of the pytest test (see results.ktap and summary.json).
"""

from __future__ import annotations

import json
import shlex

import pytest

from guest import ZERO_COPY
from harness.config import REPO, TRANSPORTS, check_scale
from harness.plugin.results import ktap_subtests, record_subtests
from harness.plugin.state import guest_stop_args

PY = "/usr/bin/python3"
BY_TRANSPORT = [pytest.param(t, marks=pytest.mark.transport(t), id=t) for t in TRANSPORTS]


def guest_cmd(args: str) -> str:
    return f"cd {shlex.quote(str(REPO))} && {PY} -m guest {args}"


@pytest.mark.long(35)
@pytest.mark.parametrize("transport", BY_TRANSPORT)
def test_guest_checks(vm, transport, request, run_dir):
    """The guest's client checks (files from 0 bytes to several max-payload chunks, trees, a
    listing over two READDIR replies, xattrs, truncate, per-CPU concurrency, fsx, fio) pass on
    this transport, and its counters show the path used. $FUSE_HARNESS_CHECK_SCALE becomes
    `check --scale` (harness.config.check_scale). Under pytest -x the guest stops at its first
    failing case (harness.plugin.state.guest_stop_args)."""
    stop = shlex.join(guest_stop_args(request.node))
    scale = check_scale()
    opts = f"{stop} --scale {scale}" if scale != 1 else stop
    result = vm.run(guest_cmd(f"check --transport {transport} {opts}".rstrip()), timeout=1500)
    (run_dir / f"guest-check-{transport}.ktap").write_text(result.stdout + "\n# stderr:\n" + result.stderr)
    subtests = ktap_subtests(result.stdout)
    record_subtests(request, subtests)
    assert not result.timed_out, "guest check timed out"
    assert subtests, f"the guest printed no KTAP: {result.stderr[-2000:]}"
    bad = [f"{s['name']} {s['verdict']} {s['reason']}".strip() for s in subtests
           if s["verdict"] not in ("PASS", "SKIP", "XFAIL")]
    assert not bad, "failing guest cases:\n" + "\n".join(bad)
    assert any(s["verdict"] == "PASS" for s in subtests), "every guest case was skipped"
    assert result.rc == 0, f"guest check exited {result.rc}"


#: The shell clients' file in KiB: four 128 KiB chunks (serve's max_write and the kernel's
#: default 32 max_pages: the most one WRITE or READ carries) and 5 KiB, so cp and cat move it
#: in several full requests and a short last one ending inside a page; times
#: $FUSE_HARNESS_CHECK_SCALE. Formerly 3077 KiB (3 MiB + 5 KiB), the same shapes 24 times over.
SHELL_FILE_KIB = 4 * 128 + 5

SHELL_CLIENTS = r"""
set -e
M={mnt}
dd if=/dev/urandom of=/tmp/fh-src-{t} bs=1k count={kib} status=none
cp /tmp/fh-src-{t} $M/big
cat $M/big > /tmp/fh-back-{t}.copy
a=$(sha256sum < /tmp/fh-src-{t}); b=$(sha256sum < /tmp/fh-back-{t}.copy); c=$(sha256sum < $M/big)
[ "$a" = "$b" ] && [ "$a" = "$c" ] || {{ echo "checksum mismatch: $a $b $c"; exit 1; }}
dd if=$M/big of=/tmp/fh-part-{t} bs=4096 skip=3 count=5 status=none
dd if=/tmp/fh-src-{t} bs=4096 skip=3 count=5 status=none | cmp - /tmp/fh-part-{t}
mkdir -p $M/d1/d2
echo hello > $M/d1/d2/f
mv $M/d1/d2/f $M/d1/g
[ "$(cat $M/d1/g)" = hello ]
ls -la $M/d1 > /dev/null
: > $M/empty
[ ! -s $M/empty ]
rm $M/d1/g $M/empty && rmdir $M/d1/d2 $M/d1
stat -f $M > /dev/null
echo CLIENTS-OK
"""


@pytest.mark.parametrize("transport", BY_TRANSPORT)
def test_shell_clients(vm, transport, run_dir):
    """cp, cat, dd, mv, ls, stat -f through a `guest serve` mount driven from the host's shell."""
    t = transport
    mnt, work = f"/tmp/fh-mnt-{t}", f"/tmp/fh-work-{t}"
    backing = f" --backing {work}/backing" if t in ZERO_COPY else ""
    serve = guest_cmd(f"serve --mount {mnt} --transport {t}{backing} "
                      f"--ready-file {work}/ready --counters {work}/counters.json")
    start = (f"mkdir -p {mnt} {work}/backing && rm -f {work}/ready {work}/counters.json && "
             f"setsid nohup sh -c {shlex.quote(serve)} > {work}/serve.log 2>&1 < /dev/null &")
    assert vm.run(start, timeout=30).ok
    # waited for in the guest (one round trip, 0.2 s steps), for at most 120 s
    if not vm.run(f"for i in $(seq 600); do test -s {work}/ready && exit 0; sleep 0.2; done; exit 1",
                  timeout=150).ok:
        log = vm.run(f"cat {work}/serve.log", timeout=20).stdout
        pytest.fail(f"the {t} server never became ready:\n{log[-3000:]}")
    clients = vm.run(SHELL_CLIENTS.format(mnt=mnt, t=t, kib=SHELL_FILE_KIB * check_scale()), timeout=600)
    umount = vm.run(f"umount {mnt}", timeout=120)
    # [g]: the pattern must not match this very shell's command line
    waited = vm.run(f"for i in $(seq 300); do pgrep -f '[g]uest serve --mount {mnt} ' >/dev/null || exit 0; "
                    f"sleep 0.2; done; exit 1", timeout=150)
    counters_text = vm.run(f"cat {work}/counters.json", timeout=20).stdout
    (run_dir / f"shell-clients-{t}.counters.json").write_text(counters_text)
    assert clients.ok and "CLIENTS-OK" in clients.stdout, clients.stdout + clients.stderr
    assert umount.ok, umount.stderr
    assert waited.ok, "the server did not exit after umount"
    counters = json.loads(counters_text)
    assert counters["setup_error"] is None and not counters["fallback"]
    assert counters["errors"]["cqe_total"] == 0, counters["errors"]
    if t == "legacy":
        assert counters["transport_used"] == "devfuse" and counters["paths"]["io_uring"] == 0
        return
    assert counters["transport_used"] == "io_uring", counters
    assert counters["uring"]["ready"]
    # data ops must have gone through the ring, not /dev/fuse
    assert counters["paths"]["io_uring"] > counters["paths"]["devfuse"], counters["paths"]
    assert counters["per_opcode"].get("WRITE", 0) > 0 and counters["per_opcode"].get("READ", 0) > 0
    strict = counters.get("strict") or {}  # every field the kernel wrote, per request (strict server)
    assert strict.get("checked", 0) > 0, f"strict server not exercised: {strict}"
    assert strict.get("violations", 0) == 0, f"strict server: {strict.get('first')}"
    if t in ("bufpool", "bufpool-registered", "zero-copy", "kmbuf", "kmbuf-zero-copy"):
        assert counters["pool"]["high_water"] >= 1
        assert counters["uring"]["registered"] == (t != "bufpool")
    if t == "bufring":  # payload in the buffer ent_in_out.buf_id named (generation B, 10/14)
        b = counters["bufring"]
        assert counters["generation"] == "B" and counters["pool"]["high_water"] >= 1, counters["pool"]
        assert b["payload"] >= 1 and b["no_payload"] >= 1, f"bufring path not exercised: {b}"
        assert b["shared"] == b["unexpected"] == b["bad_id"] == 0, b
    if t in ("kmbuf", "kmbuf-zero-copy"):  # payload in buffers the kernel picked and named
        assert counters["generation"] == "D", counters["generation"]
        assert counters["kmbuf"]["selected"] >= 1 and counters["kmbuf"]["missing"] == 0, counters["kmbuf"]
    if t in ZERO_COPY:
        assert counters["uring"]["zero_copy"]
        assert counters["zero_copy"]["read"] + counters["zero_copy"]["write"] > 0, counters["zero_copy"]
        assert counters["zero_copy"]["fixed_errors"] == 0
