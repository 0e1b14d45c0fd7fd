"""pytest plugin: options, markers, the session VM, per-test dmesg slices and verdicts.

Thin: the heavy lifting (build, boot, scan) lives in harness.kernel, harness.vm and
harness.dmesg. VM tests share one guest for the whole session; a guest that dies during a
test is classified (panic, hang, died), the test fails, and the next test gets a fresh VM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import time
from pathlib import Path

import pytest

from harness import config as hcfg
from harness import dmesg
from harness.cache import new_run_dir, safe_name
from harness.errors import HarnessError
from harness.log import Phases
from harness.plugin_xdist import guests, stop_session, worker_id
from harness.results.meta import Metadata, rerun_command, write_reproducer
from harness.results.model import CaseResult

log = logging.getLogger("harness.plugin")
#: The results half (verdicts, reproducers, outputs, terminal summary) and the parallel half
#: (`-n N`: a guest per worker, one run folder).
pytest_plugins = ["harness.plugin_xdist", "harness.plugin_results"]

RUN_DIR = pytest.StashKey[Path]()
KNOWN_DMESG = pytest.StashKey[tuple]()  # finding regexes a known issue explains
KNOWN_CASES = pytest.StashKey[tuple]()  # guest case patterns a known issue explains
INTERMITTENT = pytest.StashKey[str]()  # id of the intermittent known issue of a test
META = pytest.StashKey[Metadata]()
CASES = pytest.StashKey[list[CaseResult]]()
PHASES = pytest.StashKey[Phases]()
FINDINGS = pytest.StashKey[list[dmesg.Finding]]()
DMESG_FILE = pytest.StashKey[str]()
VM_OUTCOME = pytest.StashKey[str]()
#: Seconds the plugin spent in the guest around one test: BEGIN, END marker with the kernel log.
HARNESS_SECONDS = pytest.StashKey[float]()
#: Finding kinds after which the guest is rebooted before the next test (state may be corrupt).
TAINTING = ("OOPS", "BUG", "PANIC", "KASAN", "KFENCE", "LIST_CORRUPTION")
SUBTESTS = pytest.StashKey[list[dict[str, str]]]()
ITEMS = pytest.StashKey[dict[str, pytest.Item]]()
_CONFIG: dict[str, pytest.Config] = {}

MARKERS = (
    "vm: needs a booted guest kernel (added automatically to tests under tests/vm)",
    "transport(name): needs the named FUSE transport; skipped when the target does not promise it",
    "kconfig(*options): needs these CONFIG_ options in the built kernel (e.g. 'KASAN')",
    "expect_dmesg(*patterns): dmesg findings matching these regexes are expected, not failures",
    "slow: takes more than a minute under TCG",
    "long: takes 20 s or more under TCG (boots guests of its own, waits on kernel timers): with "
    "guests side by side (-n) such tests start first, so the run does not end waiting on one",
    "fresh_guest_after(why): the test may leave the guest wedged (a task stuck in the kernel): "
    "the next test gets a freshly booted guest",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fuse-harness")
    group.addoption("--target", default=None, help=f"target name or YAML path (default {hcfg.DEFAULT_TARGET})")
    group.addoption("--profile", default=None, help=f"kconfig profile: {', '.join(hcfg.PROFILES)} (default: default)")
    group.addoption("--source", default=None, help="override the target's kernel source (path:DIR, ...)")
    group.addoption("--series", default=None,
                    help="apply a patch series: mbox:FILE, dir:FOLDER, git:TREE#A..B, msgid:ID, NAME/REV")
    group.addoption("--results-dir", default=None, help="parent folder of run folders (default ./results)")
    group.addoption("--accel", default=None, choices=("auto", "kvm", "tcg"), help="VM accelerator")
    parser.addini("fuse_harness_target", "default target", default=hcfg.DEFAULT_TARGET)
    parser.addini("fuse_harness_profile", "default kconfig profile", default="default")


def _opt(cfg: pytest.Config, name: str, ini: str | None = None, env: str | None = None) -> str | None:
    value = cfg.getoption(name)
    if value is None and env:
        value = os.environ.get(env)
    if value is None and ini:
        value = cfg.getini(ini) or None
    return value


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[CASES] = []
    config.stash[PHASES] = Phases()
    config.stash[ITEMS] = {}
    _CONFIG["config"] = config
    if not logging.getLogger("harness").handlers:  # not started by the fuse-harness CLI
        from harness import log as hlog

        hlog.setup(verbose=config.getoption("verbose", 0) > 1)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # A CI timeout or `kill` stops the session like Ctrl-C: fixtures tear down, QEMU goes.
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run_dir(cfg: pytest.Config, target: str, profile: str) -> Path:
    """The run folder (made on first use); an xdist worker uses the controller's."""
    if RUN_DIR not in cfg.stash:
        from harness.plugin_xdist import shared_run_dir

        argv = ["pytest", *cfg.invocation_params.args]
        run_dir = shared_run_dir(cfg)
        if run_dir is not None:
            cfg.stash[META] = Metadata(run_dir, argv, persist=False)
        else:
            base = Path(_opt(cfg, "results_dir", env="FUSE_HARNESS_RESULTS") or Path.cwd() / "results")
            run_dir = new_run_dir(base, f"{target}-{profile}")
            (run_dir / "dmesg").mkdir()
            cfg.stash[META] = Metadata(run_dir, argv)
        cfg.stash[RUN_DIR] = run_dir
    return cfg.stash[RUN_DIR]


def prepare_controller(cfg: pytest.Config, build: bool) -> None:
    """The controller of an `-n N` run (harness.plugin_xdist): make the run folder; with
    `build`, first check the input (bad input stops before a run folder exists), then build
    the kernel once."""
    from harness.kernel import preflight

    profile = _profile_name(cfg)
    if not build:
        _run_dir(cfg, _target_name(cfg) or hcfg.DEFAULT_TARGET, profile)
        return
    try:
        target = hcfg.load_target(_target_name(cfg))
        preflight(target, profile, _opt(cfg, "source"), _opt(cfg, "series"))
    except HarnessError as exc:
        raise pytest.UsageError(f"fuse-harness: {exc}") from None
    _obtain(cfg, target, profile, _run_dir(cfg, target.name, profile))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from harness import known_issues

    try:
        issues = known_issues.load()
        target = hcfg.load_target(_opt(config, "target", "fuse_harness_target", "FUSE_HARNESS_TARGET"))
        if any("/tests/vm/" in str(i.path).replace("\\", "/") for i in items):
            from harness.kernel import preflight  # bad input stops before a run folder exists

            preflight(target, _opt(config, "profile", "fuse_harness_profile") or "default",
                      _opt(config, "source"), _opt(config, "series"))
    except HarnessError as exc:
        raise pytest.UsageError(f"fuse-harness: {exc}") from None
    for item in items:
        if "/tests/vm/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.vm)
        issue = known_issues.matching(issues, item.nodeid, target.kernel_version, target.name)
        if issue is not None:
            item.add_marker(pytest.mark.xfail(strict=not issue.intermittent,
                                              reason=f"known issue {issue.id}: {issue.reason}"))
            if issue.intermittent:
                item.stash[INTERMITTENT] = issue.id
            item.user_properties.append(("known_issue", issue.id))
            item.stash[KNOWN_DMESG] = issue.dmesg
            item.stash[KNOWN_CASES] = issue.cases


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> hcfg.Target:
    try:
        return hcfg.load_target(_target_name(pytestconfig))
    except HarnessError as exc:
        stop_session(request, f"fuse-harness: {exc}", 4)


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> str:
    return _profile_name(pytestconfig)


def _target_name(cfg: pytest.Config) -> str | None:
    """--target, the ini value or $FUSE_HARNESS_TARGET (None: the default target)."""
    return _opt(cfg, "target", "fuse_harness_target", "FUSE_HARNESS_TARGET")


def _profile_name(cfg: pytest.Config) -> str:
    return _opt(cfg, "profile", "fuse_harness_profile", "FUSE_HARNESS_PROFILE") or "default"


@pytest.fixture(scope="session")
def run_dir(pytestconfig: pytest.Config, target: hcfg.Target, profile: str) -> Path:
    return _run_dir(pytestconfig, target.name, profile)


@pytest.fixture(scope="session")
def kernel(pytestconfig: pytest.Config, target: hcfg.Target, profile: str, run_dir: Path,
           request: pytest.FixtureRequest):
    """The built kernel for --target/--profile (cached builds are reused)."""
    return _obtain(pytestconfig, target, profile, run_dir, request)


def _obtain(cfg: pytest.Config, target: hcfg.Target, profile: str, run_dir: Path, request=None):  # noqa: ANN001
    from harness.kernel import obtain

    try:
        with _uncaptured(cfg):  # a cold build takes minutes: show its progress
            k = obtain(target, profile, cfg.stash[PHASES],
                       source_override=_opt(cfg, "source", env="FUSE_HARNESS_SOURCE"),
                       series_override=_opt(cfg, "series", env="FUSE_HARNESS_SERIES"))
    except HarnessError as exc:
        cfg.stash[META].update(status="ERROR", error=str(exc))
        stop_session(request, f"fuse-harness: cannot build the kernel: {exc}", exc.exit_code)
    (run_dir / "kernel.config").write_text(k.built.config.read_text())
    cfg.stash[META].update(kernel=k.describe())
    return k


@contextlib.contextmanager
def _uncaptured(config: pytest.Config):
    """Let progress lines of long session-fixture steps (build, boot) reach the terminal."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


@pytest.fixture(scope="session")
def vm(pytestconfig: pytest.Config, kernel, run_dir: Path, request: pytest.FixtureRequest):
    """One guest for the whole session, restarted by the plugin after it dies."""
    from harness.vm import kept
    from harness.vm.boot import choose_accel
    from harness.vm.machine import Vm

    settings = hcfg.vm_settings(kernel.profile, accel=_opt(pytestconfig, "accel"))
    settings = dataclasses.replace(settings, tcg_threads=hcfg.tcg_threads(settings, guests(pytestconfig)))
    accel = choose_accel(settings.accel)

    kmemleak = kernel.has_config("DEBUG_KMEMLEAK") and "kmemleak=off" not in settings.append
    machine = Vm(kernel.image, settings, accel, run_dir, rwdirs=(run_dir,), runner_repo=hcfg.REPO,
                 label=worker_id(pytestconfig) or "", kmemleak=kmemleak)
    phases = pytestconfig.stash[PHASES]
    claim = kept.session_claim(machine, kernel.image, kernel.built.kernel_release, accel.kind)
    try:
        with phases.measure("boot"), _uncaptured(pytestconfig):
            if not machine.running():
                machine.start()
    except HarnessError as exc:
        pytestconfig.stash[META].update(error=str(exc))
        stop_session(request, f"fuse-harness: {exc}", exc.exit_code)
    pytestconfig.stash[META].update(vm={"accel": accel.kind, "accel_reason": accel.reason,
                                        "tcg_threads": None if accel.kind != "tcg" or machine.adopted
                                        else settings.tcg_threads,
                                        "command": machine.command, "adopted": machine.adopted,
                                        "boot_seconds": None if machine.adopted else round(machine.boot_seconds, 1),
                                        "ssh_seconds": None if machine.adopted else round(machine.ssh_seconds, 1)})
    values = _rerun_values(pytestconfig)
    build_opts = [x for key, v in values.items() if v and key != "accel" for x in (f"--{key}", str(v))]
    write_reproducer(run_dir, [
        f"# kernel {kernel.built.kernel_release} from {kernel.source_spec}, build {kernel.built.build_dir.name}",
        shlex.join([".venv/bin/fuse-harness", "build", *build_opts]),
        shlex.join(rerun_command("tests/vm", values)),
        "# the guest alone, with a shell in it (the QEMU command is in metadata.json):",
        "# " + shlex.join([".venv/bin/fuse-harness", "shell", *build_opts]),
    ])
    pytestconfig.stash[_VM] = machine
    yield machine
    machine.stop()
    if claim is not None:
        claim.release()


_VM = pytest.StashKey[object]()


# -- per-test dmesg and VM health ----------------------------------------------------
def _expected_patterns(item: pytest.Item) -> list[str]:
    patterns: list[str] = []
    for mark in item.iter_markers("expect_dmesg"):
        patterns.extend(mark.args)
    return patterns


@pytest.fixture(autouse=True)
def _fuse_harness_requirements(request: pytest.FixtureRequest) -> None:
    """Skip (with the reason) tests whose transport the target does not promise, or whose
    kconfig options the built kernel lacks. A promised transport is never skipped."""
    item = request.node
    transports = [m.args[0] for m in item.iter_markers("transport")]
    options = [o for m in item.iter_markers("kconfig") for o in m.args]
    if not transports and not options:
        return
    tgt = request.getfixturevalue("target")
    for name in transports:
        if name not in hcfg.TRANSPORTS:
            raise pytest.UsageError(f"{item.nodeid}: unknown transport {name!r}")
        promised = request.getfixturevalue("kernel").promises()
        if name not in promised:
            pytest.skip(f"target {tgt.name} (and its series) does not promise transport {name}")
    if options:
        k = request.getfixturevalue("kernel")
        missing = [o for o in options if not k.has_config(o)]
        if missing:
            pytest.skip(f"kernel built without CONFIG_{', CONFIG_'.join(missing)} (try --profile debug)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Slice the guest's dmesg around the test; a finding not declared with expect_dmesg,
    or a guest that died, fails the test's call phase (so xfail/known issues apply)."""
    machine = item.config.stash.get(_VM, None)
    if item.get_closest_marker("vm") is None or machine is None:
        outcome = yield
        _judge(item, outcome)
        return
    began = time.monotonic()
    start = machine.mark(f"BEGIN {item.nodeid}", rearm_warn_once=True)  # None: the guest is gone
    item.stash[HARNESS_SECONDS] = time.monotonic() - began
    outcome = yield
    _collect_dmesg(item, machine, start)
    _judge(item, outcome)


def _collect_dmesg(item: pytest.Item, machine, start: str | None) -> None:
    run_dir = item.config.stash[RUN_DIR]
    name = safe_name(item.nodeid.split("::", 1)[-1])[:120]
    path = run_dir / "dmesg" / f"{name}.log"
    text = ""
    began = time.monotonic()
    end = machine.end_mark(f"END {item.nodeid}")
    item.stash[HARNESS_SECONDS] = item.stash.get(HARNESS_SECONDS, 0.0) + time.monotonic() - began
    if end is not None:
        text = dmesg.slice_between(end.dmesg, start, end.marker) if start else end.dmesg
    else:
        # The guest died or hangs: the console holds the kernel log up to its end.
        console = machine.console()
        text = dmesg.slice_between(console, start, None) if start else console[-20000:]
        outcome, why = machine.classify_death()
        item.stash[VM_OUTCOME] = f"{outcome}: {why}"
        machine.dump_tasks(run_dir / "dmesg" / f"{name}.console-tail.log")
    path.write_text(text)
    item.stash[DMESG_FILE] = str(path.relative_to(run_dir))
    stuck = end.stuck if end is not None else []
    findings = [f for f in dmesg.scan(text) if dmesg.in_scope(f)] + [
        dmesg.Finding("STUCK_TASK", f"left in D state after the test: {t}", t, t) for t in stuck]
    item.stash[FINDINGS] = item.stash.get(FINDINGS, []) + findings
    tainted = sorted({f.kind for f in findings if f.kind in TAINTING})
    wedge = item.get_closest_marker("fresh_guest_after")
    if stuck and not wedge:
        wedge = pytest.mark.fresh_guest_after(f"tasks stuck in D state: {'; '.join(stuck)[:200]}").mark
    if item.session.items and item.session.items[-1] is item:
        return  # no next test to protect: no reboot (a debug guest takes minutes)
    if end is None:  # one fresh guest, whatever the dead one's console says (its panic is a finding)
        _restart(item, machine, "restart failed")
        return
    if wedge and not tainted and machine.alive():
        log.warning("%s may leave the guest wedged (%s): rebooting the guest", item.nodeid, wedge.args[0])
        _restart(item, machine, "guest restart after a test that may wedge it failed")
    if tainted and machine.alive():
        # an oops may leave locks held or memory corrupt: the next test gets a fresh guest,
        # so its findings are its own
        log.warning("%s left the kernel tainted (%s): rebooting the guest", item.nodeid, ", ".join(tainted))
        _restart(item, machine, f"guest restart after {', '.join(tainted)} failed")


def _restart(item: pytest.Item, machine, failed: str) -> None:
    """A fresh guest for the next test; a restart that fails is added to this test's VM outcome."""
    try:
        machine.restart()
    except HarnessError as exc:
        previous = item.stash.get(VM_OUTCOME, "")
        item.stash[VM_OUTCOME] = f"{previous}; {failed}: {exc}" if previous else f"{failed}: {exc}"


def _judge(item: pytest.Item, outcome) -> None:
    """Turn a passing call into a failure for a dead guest or unexpected dmesg findings."""
    if outcome.excinfo is not None:
        return
    vm_outcome = item.stash.get(VM_OUTCOME, None)
    if vm_outcome:
        outcome.force_exception(pytest.fail.Exception(f"guest died during the test: {vm_outcome}", pytrace=False))
        return
    unexpected = _unexplained(item.stash.get(FINDINGS, []), _expected_patterns(item))
    if unexpected:
        outcome.force_exception(pytest.fail.Exception(
            f"kernel log findings during this test (not declared with expect_dmesg):\n{unexpected}", pytrace=False))


def _unexplained(findings: list[dmesg.Finding], patterns: list[str]) -> str:
    """The findings no pattern matches, one indented "kind: line" each ('' when none)."""
    return "\n".join(f"  {f.kind}: {f.line}" for f in findings if not any(f.matches(p) for p in patterns))


def _rerun_values(cfg: pytest.Config) -> dict[str, str | None]:
    """target/profile/source/series/accel as this session resolved them (for reproducers)."""
    return {"target": _target_name(cfg) or hcfg.DEFAULT_TARGET, "profile": _profile_name(cfg),
            "source": _opt(cfg, "source", env="FUSE_HARNESS_SOURCE"),
            "series": _opt(cfg, "series", env="FUSE_HARNESS_SERIES"), "accel": _opt(cfg, "accel")}

