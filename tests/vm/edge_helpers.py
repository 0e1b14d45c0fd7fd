"""Shared by tests/vm/test_edge_*.py: run one guest edge scenario, record, judge, reproduce.

Each test runs `python3 -m guest edge NAME` in the session guest, records the guest's KTAP
cases as subtests, and fails with the failing cases and their `# ` diagnostics. A failing
(or known-issue) test leaves `reproducer-<test>.sh` in the run dir. A scenario that overran
its host timeout gets a recovery pass (abort every FUSE connection, lazy umount) so the
next test does not inherit a wedged mount.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from guest import edge
from harness.config import REPO
from harness.plugin.results import ktap_subtests, record_subtests, reproducer_path
from harness.results.meta import CHECKOUT_PROLOGUE

PY = "/usr/bin/python3"


def transports_for(scenario: str) -> list:
    """The pytest parameters of a scenario run over transports: one per transport with the
    features its SCENARIOS entry needs (guest/transports/features.py), id = the transport,
    marked `transport(T)` (skipped, with the reason, where the target does not promise T),
    `slow` where the default tier leaves that transport out (guest.edge.default_tier), and
    `fresh_guest_after` where a run may wedge the guest (its `wedges`). ValueError for a
    scenario that sets its own rings up (it takes no transport parameter)."""
    if edge.SCENARIOS[scenario].needs is None:
        raise ValueError(f"edge scenario {scenario} sets its own rings up: it has no transport parameter")
    params = []
    for t in edge.transports_for(scenario):
        marks = [pytest.mark.transport(t)]
        if not edge.default_tier(scenario, t):
            marks.append(pytest.mark.slow)
        if edge.wedges(scenario, t):
            marks.append(pytest.mark.fresh_guest_after(
                f"{scenario} over {t} may leave a task spinning or stuck in the kernel"))
        params.append(pytest.param(t, marks=marks, id=t))
    return params


RECOVER = (
    "mountpoint -q /sys/fs/fuse/connections 2>/dev/null || "
    "mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null; "
    "for c in /sys/fs/fuse/connections/*/abort; do [ -e \"$c\" ] && echo 1 > \"$c\"; done; "
    "awk '$2 ~ /^\\/tmp\\/fh-edge-/ {print $2}' /proc/mounts | sort -r | "
    "while read -r m; do umount -l \"$m\"; done; true"
)


def guest_command(scenario: str, extra: str = "", time_scale: float = 1.0, env: dict | None = None) -> str:
    env = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted((env or {}).items())) + (
        f"FUSE_HARNESS_TIME_SCALE={time_scale:g} " if time_scale != 1.0 else "")
    return f"cd {shlex.quote(str(REPO))} && {env}{PY} -m guest edge {scenario} {extra}".strip()


def _diags(stdout: str, case: str) -> list[str]:
    short = case.split(".", 1)[-1]
    return [ln[2:] for ln in stdout.splitlines() if ln.startswith(f"# {short}:")]


def in_checkout(command: str) -> str:
    """A guest command with its `cd <this checkout> && ` prefix turned into `cd "$PWD" && `
    (the host shell of a reproducer fills it in: the guest sees the host's paths)."""
    prefix = f"cd {shlex.quote(str(REPO))} && "
    return 'cd "$PWD" && ' + (command[len(prefix):] if command.startswith(prefix) else command)


def write_reproducer(run_dir: Path, request: pytest.FixtureRequest, kernel, command: str,
                     catalog: str) -> Path:
    """reproducer-<test>.sh: boot the kernel (cached build) and run the guest command in it,
    from whatever checkout the user runs it in (no path of this machine)."""
    tgt = kernel.target
    kconfig = "+".join(getattr(tgt, "kconfig", ()) or ())
    guest = in_checkout(command)
    lines = [
        "#!/bin/sh",
        f"# {request.node.nodeid} (catalog {catalog}, fuse-uring-abi.md)",
        f"# kernel: Linux {kernel.built.kernel_release} ({kernel.source_spec}), "
        f"config: kconfigs/{kconfig}, target {tgt.name}, profile {kernel.profile}",
        "# Boots that kernel and runs the scenario in the guest. Inside a guest you already have",
        "# (fuse-harness shell), run the double-quoted command from the checkout's directory.",
        *CHECKOUT_PROLOGUE,
        f'exec .venv/bin/fuse-harness shell --target {tgt.name} --profile {kernel.profile} '
        f'"{guest.replace(chr(34), chr(92) + chr(34))}"',
        "",
    ]
    path = reproducer_path(request.node, run_dir)
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return path


def run_edge(vm, request, run_dir: Path, kernel, scenario: str, catalog: str,
             timeout: float, extra: str = "", env: dict | None = None) -> list[dict[str, str]]:
    """Run the scenario (env: variables for the guest command); record subtests; fail (with a
    reproducer) unless every case passed."""
    cmd = guest_command(scenario, extra, getattr(vm.settings, "time_scale", 1.0), env)
    result = vm.run(cmd, timeout=timeout)
    out = result.stdout
    ring = re.search(r"--transport (\S+)", extra)
    ktap = run_dir / f"edge-{scenario}{'-' + ring.group(1) if ring else ''}.ktap"
    ktap.write_text(out + "\n# stderr:\n" + result.stderr)
    subtests = ktap_subtests(out)
    record_subtests(request, subtests)
    problems: list[str] = []
    if result.timed_out or result.lost:
        problems.append(f"the guest command {'timed out' if result.timed_out else 'lost its connection'}"
                        f" after {timeout}s")
        if not result.lost:
            vm.run(RECOVER, timeout=60)
    if not subtests:
        problems.append(f"the guest printed no KTAP; stderr: {result.stderr[-1500:]}")
    for s in subtests:
        if s["verdict"] in ("PASS", "SKIP", "XFAIL"):
            continue
        why = "; ".join(_diags(out, s["name"])) or s["reason"]
        problems.append(f"{s['name']}: {s['verdict']}: {why}")
    if subtests and all(s["verdict"] == "SKIP" for s in subtests):
        problems.append("every case was skipped: "
                        + "; ".join(f"{s['name']}: {s['reason']}" for s in subtests))
    if not problems and result.rc != 0:
        problems.append(f"guest exited {result.rc}: {result.stderr[-800:]}")
    known = any(k == "known_issue" for k, _ in request.node.user_properties)
    if problems or known:
        path = write_reproducer(run_dir, request, kernel, cmd, catalog)
        problems.append(f"reproducer: {path}")
    if problems and not (len(problems) == 1 and known):
        pytest.fail(f"edge scenario {scenario} ({catalog}) misbehaved:\n  " + "\n  ".join(problems),
                    pytrace=False)
    return subtests
