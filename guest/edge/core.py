"""Scenario context: KTAP per assertion, a watchdog, and cleanup that never wedges.

Every mount a scenario makes is registered here; at the end (or when the
watchdog fires) each is aborted through fusectl and lazily unmounted. The
mount point is never stat()ed. Client children are killed and reaped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
import traceback

from guest import mount as M
from guest.ktap import FAIL, PASS, SKIP, Ktap
from guest.transports import strict


def ename(res: int | None) -> str:
    """-22 -> '-EINVAL', None -> 'no CQE'."""
    if res is None:
        return "no CQE"
    if res >= 0:
        return str(res)
    return "-" + errno.errorcode.get(-res, str(-res))


#: The case every scenario ends with (guest.edge.leaks).
LEAK_CASE = "no_leaks"
#: The case before it: every ring request the scenario's engines received had every field as
#: the request implies (guest/transports/strict.py).
STRICT_CASE = "strict_server"


class Timeout(Exception):
    """The scenario's time budget ran out."""


def _res_diag(what: str, got: int | None, want: int) -> str:
    """"<what> CQE res -EINVAL (expected -EINVAL)": one CQE result against the expected one."""
    return f"{what} CQE res {ename(got)} (expected {ename(want)})".strip()


class Ctx:
    """One scenario run: its case names, KTAP output, deadline and resources."""

    def __init__(self, scenario: str, cases: list[str], budget: float) -> None:
        self.scenario = scenario
        self.cases = list(cases)
        self.done: set[str] = set()
        self.skipped: set[str] = set()
        self.k = Ktap()
        self.start = time.monotonic()
        self.pid = os.getpid()
        self.deadline = self.start + budget
        self.mounts: list[str] = []
        self.pids: list[int] = []
        self.closers: list = []
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.timed_out = False

    # -- results -----------------------------------------------------------
    def _name(self, case: str) -> str:
        return f"{self.scenario}.{case}"

    def result(self, case: str, ok: bool | None, diag: str = "", reason: str = "") -> bool:
        """Report one case once: True pass, False fail, None skip (reason)."""
        with self.lock:
            if case in self.done or self.finished.is_set():
                return bool(ok)
            self.done.add(case)
            if ok is None:
                self.skipped.add(case)
            if diag:
                self.k.diag(f"{case}: {diag}")
            status = PASS if ok else (SKIP if ok is None else FAIL)
            self.k.result(self._name(case), status, reason)
        return bool(ok)

    def expect_res(self, case: str, got: int | None, want: int, what: str = "") -> bool:
        """A CQE result must equal want (a negative errno or 0)."""
        return self.result(case, got == want, _res_diag(what, got, want))

    def expect_res_control(self, case: str, got: int | None, want: int, control: int | None,
                           control_ok: bool, what: str = "",
                           control_what: str = "the control") -> bool:
        """expect_res, proved by a control: `control` is the CQE res (None: parked) of the same
        command with the field under test fixed, and control_ok says it got past the check the
        case names (parked, 0, or the later errno the caller expects). Without that the errno
        is not shown to depend on the field: the case fails as not exercised."""
        return self.result_control(case, got == want, _res_diag(what, got, want), control, control_ok,
                                   control_what)

    def result_control(self, case: str, ok: bool, diag: str, control: int | None,
                       control_ok: bool, control_what: str = "the control") -> bool:
        """result(case, ok, diag) when the control got past the check (control_ok), else a
        failure as not exercised; control is the control command's CQE res (None: parked)."""
        ctl = "parked" if control is None else ename(control)
        if not control_ok:
            return self.result(case, False, f"not exercised: the control command (field fixed) "
                                            f"was refused too: {ctl} ({control_what}); {diag}")
        return self.result(case, ok, f"{diag}; {control_what}: {ctl}")

    def diag(self, text: str) -> None:
        with self.lock:
            self.k.diag(text)

    def left(self) -> float:
        """Seconds left in the budget (raises Timeout when none)."""
        rest = self.deadline - time.monotonic()
        if rest <= 0 or self.timed_out:
            raise Timeout(f"budget of {self.deadline - self.start:.0f}s exhausted")
        return rest

    # -- resources ---------------------------------------------------------
    def mountpoint(self, tag: str) -> str:
        path = f"/tmp/fh-edge-{self.scenario}-{tag}-{self.pid}"
        os.makedirs(path, exist_ok=True)
        if path not in self.mounts:
            self.mounts.append(path)
        return path

    def cleanup(self) -> None:
        """Abort every connection, lazily unmount, kill clients, close fds."""
        for path in self.mounts:
            try:
                M.teardown(path)
            except Exception:  # noqa: BLE001 - best effort
                traceback.print_exc(file=sys.stderr)
        for pid in self.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            _reap(pid, 5.0)
        for fn in reversed(self.closers):
            with contextlib.suppress(Exception):
                fn()
        for path in self.mounts:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _reap(pid: int, timeout: float) -> int | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        time.sleep(0.02)
    return None


def run(scenario: str, cases: list[str], fn, args, budget: float) -> int:
    """Run fn(ctx, args) under a watchdog, then the strict server's verdict (case
    strict_server) and the leak checks (case no_leaks, see guest.edge.leaks); print KTAP;
    return the exit code."""
    from guest.edge import leaks

    before = leaks.snapshot()
    made = strict.mark()
    ctx = Ctx(scenario, [*cases, STRICT_CASE, LEAK_CASE], budget)
    ctx.k.header(len(ctx.cases))
    ctx.diag(f"scenario {scenario}, budget {budget:.0f}s, kernel {os.uname().release}")

    def watchdog() -> None:
        if ctx.finished.wait(budget):
            return
        ctx.timed_out = True
        ctx.diag(f"watchdog: {budget:.0f}s budget exhausted, aborting every connection")
        if task_state(os.getpid(), os.getpid()) in ("Z", "X", "-"):  # the main thread
            ctx.diag("the scenario's main thread is gone: killed inside the kernel (see the kernel log)")
        for line in busy_tasks(os.getpid()):
            ctx.diag(f"watchdog: {line}")
        for path in ctx.mounts:
            try:
                M.abort(path)
            except OSError as exc:
                ctx.diag(f"watchdog: abort of {path} failed: {exc}")
        if ctx.finished.wait(15.0):
            return
        _finish(ctx, "timeout", "scenario wedged even after abort")
        for path in ctx.mounts:
            with contextlib.suppress(OSError):
                M.umount(path, M.MNT_DETACH)
        sys.stdout.flush()
        os._exit(1)

    wd = threading.Thread(target=watchdog, name="watchdog", daemon=True)
    wd.start()
    try:
        try:
            fn(ctx, args)
        finally:  # a mismatch seen before a timeout or an error is still a finding
            _strict_case(ctx, strict.since(made))
    except Timeout as exc:
        ctx.diag(f"timeout: {exc}")
        _finish(ctx, "timeout", "budget exhausted")
    except Exception:  # noqa: BLE001 - becomes # ERROR lines, not a traceback
        for line in traceback.format_exc().splitlines():
            ctx.diag(line)
        _finish(ctx, "error", "exception")
    finally:
        if ctx.timed_out:
            _finish(ctx, "timeout", "budget exhausted")
        ctx.cleanup()
        _leak_case(ctx, before)
        _finish(ctx, "error", "not reached")
        ctx.diag(f"elapsed {time.monotonic() - ctx.start:.2f}s")
        ctx.k.totals()
        ctx.finished.set()
    return ctx.k.exit_code()


def _strict_case(ctx: Ctx, servers: list) -> None:
    """Case strict_server: fails with the first mismatch (its request dumped) that any ring
    engine of the scenario saw; skipped when no request reached a ring entry, or when every
    case of the scenario was skipped (its pass must not make an unexercised scenario pass)."""
    seen = [s for s in servers if s.checked]
    if not seen:
        ctx.result(STRICT_CASE, None, reason="no ring request checked in the scenario's process "
                   "(none reached an entry, or the server was a forked child)")
        return
    bad = [s for s in seen if s.violations]
    if bad:
        more = f" ({len(bad) - 1} more engine(s) with mismatches)" if len(bad) > 1 else ""
        ctx.result(STRICT_CASE, False, bad[0].summary() + more)
        return
    names = sorted({s.name for s in seen})
    what = f"{sum(s.checked for s in seen)} ring requests ({', '.join(names)}): every field as the request implies"
    if ctx.skipped >= set(ctx.cases) - {STRICT_CASE, LEAK_CASE}:
        ctx.result(STRICT_CASE, None, what, reason="every case of the scenario was skipped")
        return
    ctx.result(STRICT_CASE, True, what)


def _leak_case(ctx: Ctx, before) -> None:  # noqa: ANN001
    """Case no_leaks after cleanup: skipped when every case was, or when cleanup was cut short."""
    from guest.edge import leaks

    if ctx.timed_out or ctx.finished.is_set():
        return
    if ctx.skipped >= set(ctx.cases) - {LEAK_CASE}:
        ctx.result(LEAK_CASE, None, reason="nothing ran")
        return
    missing = leaks.check(before)
    ctx.result(LEAK_CASE, not missing, "after cleanup: " + ("; ".join(missing) or
                                                              "connections, VmLck and pinned pages back"))


def task_state(pid: int, tid: int | None = None) -> str:
    """The state letter (R, S, D, Z, ...) of a process, or of one of its threads; '-' when gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "-"


def kernel_stack(pid: int | str) -> str:
    """Where a task sleeps in the kernel: its wchan and its top frames (/proc/PID/stack, root
    only; pid may be 'PID/task/TID' for one thread), one line; '' when it is gone."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
        with open(f"/proc/{pid}/stack") as f:
            frames = [ln.split("] ", 1)[-1].split("+", 1)[0] for ln in f.read().splitlines()[:6]]
    except OSError:
        return ""
    return f"wchan {wchan}: {' < '.join(frames)}"


def busy_tasks(root: int) -> list[str]:
    """The threads of process root and of its descendants that are running (R) or in an
    uninterruptible wait (D), each as 'task PID/TID (COMM) STATE, wchan ...: frames' (at most
    12): where a wedged scenario is stuck, printed before the watchdog aborts anything."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    lines = []
    for pid in sorted(family):
        try:
            tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        for tid in tids:
            state = task_state(pid, tid)
            if state not in ("R", "D") or tid == threading.get_native_id():
                continue
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            lines.append(f"task {pid}/{tid} ({comm}) {state}, {_cpu_times(pid, tid)}, "
                         f"{kernel_stack(f'{pid}/task/{tid}') or 'gone'}")
    return lines[:12]


def _cpu_times(pid: int, tid: int) -> str:
    """'user U s, kernel K s' of one thread (/proc/PID/task/TID/stat fields 14 and 15, in
    clock ticks): a thread in R whose kernel time grows is spinning in the kernel."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return f"user {int(fields[11]) / tick:.1f} s, kernel {int(fields[12]) / tick:.1f} s"
    except (OSError, IndexError, ValueError):
        return "cpu time unknown"


def _finish(ctx: Ctx, status: str, reason: str) -> None:
    """Report every case not reported yet with status (timeout/error)."""
    with ctx.lock:
        for case in ctx.cases:
            if case not in ctx.done:
                ctx.done.add(case)
                ctx.k.result(ctx._name(case), status, reason)
