"""pytest plugin, session half: options, markers, input checks, the session's kernel and
guest, and the requirements (transport, kconfig) of each test.

Thin: the heavy lifting (build, boot, scan) lives in harness.kernel, harness.vm and
harness.dmesg. VM tests share one guest for the whole session (one per worker under `-n`);
each test's dmesg slice and the guest's health around it are harness.plugin.health's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import signal
from pathlib import Path

import pytest

from harness import config as hcfg
from harness.cache import new_run_dir
from harness.errors import HarnessError
from harness.log import Phases
from harness.plugin import state
from harness.plugin.xdist import (
    built_stamp,
    distributing,
    guests,
    hand_over_build,
    reaches_vm_tests,
    shared_run_dir,
    stop_session,
    worker_id,
)
from harness.results.meta import Metadata, rerun_command, write_reproducer

log = logging.getLogger("harness.plugin")
MARKERS = (
    "vm: needs a booted guest kernel (added automatically to tests under tests/vm)",
    "transport(name): needs the named FUSE transport; skipped when the target does not promise it",
    "kconfig(*options): needs these CONFIG_ options in the built kernel (e.g. 'KASAN')",
    "expect_dmesg(*patterns): dmesg findings matching these regexes are expected, not failures",
    "expect_kernel_finding(kind, pattern): the test's own kernel-log slice must hold a finding of this "
    "kind (WARNING, BUG, KASAN, ...: harness.plugin.health.KINDS) whose line or fingerprint the regex "
    "matches: it is then no failure, its absence is one, and any other finding still fails the test",
    "slow: takes more than a minute under TCG",
    "long(seconds): takes about that long under TCG, 20 s or more (boots guests of its own, waits on "
    "kernel timers): with guests side by side (-n) such tests start first, the longest first",
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


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[state.CASES] = []
    config.stash[state.PHASES] = Phases()
    config.stash[state.ITEMS] = {}
    state.CONFIG["config"] = config
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
    if state.RUN_DIR not in cfg.stash:
        argv = ["pytest", *cfg.invocation_params.args]
        run_dir = shared_run_dir(cfg)
        if run_dir is not None:
            cfg.stash[state.META] = Metadata(run_dir, argv, persist=False)
        else:
            base = Path(state.opt(cfg, "results_dir", env="FUSE_HARNESS_RESULTS") or Path.cwd() / "results")
            run_dir = new_run_dir(base, f"{target}-{profile}")
            (run_dir / "dmesg").mkdir()
            cfg.stash[state.META] = Metadata(run_dir, argv)
        cfg.stash[state.RUN_DIR] = run_dir
    return cfg.stash[state.RUN_DIR]


@pytest.hookimpl(tryfirst=True)  # before xdist's DSession starts the workers
def pytest_sessionstart(session: pytest.Session) -> None:
    """Controller of an `-n N` run (harness.plugin.xdist): make the run folder before any
    worker starts, and with VM tests first check the input and build the kernel (so N workers
    neither build twice nor each make a folder). A folder no worker used is removed at the end."""
    if distributing(session.config):
        prepare_controller(session.config, build=reaches_vm_tests(session.config))


def prepare_controller(cfg: pytest.Config, build: bool) -> None:
    """The controller of an `-n N` run: check known-issues.yaml and the target, make the run
    folder; with `build`, first check all the input (bad input stops before a run folder
    exists), then build the kernel once."""
    from harness import known_issues

    try:  # the workers load it again as they collect, where its error would be an INTERNALERROR
        known_issues.load()
    except HarnessError as exc:
        raise pytest.UsageError(f"fuse-harness: {exc}") from None
    profile = state.profile_name(cfg)
    if not build:  # the workers load the target as they collect: a bad one is said here
        _run_dir(cfg, _checked_target(cfg, preflight=False).name, profile)
        return
    target = _checked_target(cfg, preflight=True)
    _obtain(cfg, target, profile, _run_dir(cfg, target.name, profile))


def _checked_target(cfg: pytest.Config, preflight: bool) -> hcfg.Target:
    """The session's target; with `preflight`, the run's input checked too (kernel.preflight):
    bad input is a UsageError before a run folder exists."""
    from harness.kernel import preflight as check

    try:
        target = hcfg.load_target(state.target_name(cfg))
        if preflight:
            check(target, state.profile_name(cfg), state.opt(cfg, "source"), state.opt(cfg, "series"))
    except HarnessError as exc:
        raise pytest.UsageError(f"fuse-harness: {exc}") from None
    return target


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from harness import known_issues

    try:
        issues = known_issues.load()
    except HarnessError as exc:
        raise pytest.UsageError(f"fuse-harness: {exc}") from None
    target = _checked_target(config, preflight=any("/tests/vm/" in str(i.path).replace("\\", "/") for i in items))
    for item in items:
        if "/tests/vm/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.vm)
        found = known_issues.covering(issues, item.nodeid, target.kernel_version, target.name)
        if found:
            intermittent = all(k.intermittent for k in found)
            item.add_marker(pytest.mark.xfail(strict=not intermittent, reason="\n".join(
                f"known issue {k.id}: {k.reason}" for k in found)))
            if intermittent:
                item.stash[state.INTERMITTENT] = ", ".join(k.id for k in found)
            item.user_properties += [("known_issue", k.id) for k in found]
            item.stash[state.KNOWN_DMESG] = tuple(p for k in found for p in k.dmesg)
            item.stash[state.KNOWN_CASES] = tuple(p for k in found for p in k.cases)


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> hcfg.Target:
    try:
        return hcfg.load_target(state.target_name(pytestconfig))
    except HarnessError as exc:
        stop_session(request, f"fuse-harness: {exc}", 4)


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> str:
    return state.profile_name(pytestconfig)


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
            k = obtain(target, profile, cfg.stash[state.PHASES],
                       source_override=state.opt(cfg, "source", env="FUSE_HARNESS_SOURCE"),
                       series_override=state.opt(cfg, "series", env="FUSE_HARNESS_SERIES"),
                       built_stamp=built_stamp(cfg))
    except HarnessError as exc:
        cfg.stash[state.META].update(status="ERROR", error=str(exc))
        stop_session(request, f"fuse-harness: cannot build the kernel: {exc}", exc.exit_code, cfg)
    hand_over_build(cfg, k.built.build_dir)
    (run_dir / "kernel.config").write_text(k.built.config.read_text())
    cfg.stash[state.META].update(kernel=k.describe())
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
    from harness.vm.boot import choose_accel, tcg_threads
    from harness.vm.machine import Vm

    settings = hcfg.vm_settings(kernel.profile, accel=state.opt(pytestconfig, "accel"))
    settings = dataclasses.replace(settings, tcg_threads=tcg_threads(settings, guests(pytestconfig)))
    accel = choose_accel(settings.accel)

    machine = Vm(kernel.image, settings, accel, run_dir, rwdirs=(run_dir,), runner_repo=hcfg.REPO,
                 label=worker_id(pytestconfig) or "", kmemleak=settings.kmemleak(kernel.has_config("DEBUG_KMEMLEAK")))
    phases = pytestconfig.stash[state.PHASES]
    claim = kept.session_claim(machine, kernel.image, kernel.built.kernel_release, accel.kind)
    try:
        with phases.measure("boot"), _uncaptured(pytestconfig):
            if not machine.running():
                machine.start()
    except HarnessError as exc:
        pytestconfig.stash[state.META].update(error=str(exc))
        stop_session(request, f"fuse-harness: {exc}", exc.exit_code)
    pytestconfig.stash[state.META].update(vm={"accel": accel.kind, "accel_reason": accel.reason,
                                        "tcg_threads": machine.tcg_threads,
                                        "command": machine.command, "adopted": machine.adopted,
                                        "boot_seconds": None if machine.adopted else round(machine.boot_seconds, 1),
                                        "ssh_seconds": None if machine.adopted else round(machine.ssh_seconds, 1)})
    values = state.rerun_values(pytestconfig)
    build_opts = [x for key, v in values.items() if v and key != "accel" for x in (f"--{key}", str(v))]
    write_reproducer(run_dir, [
        f"# kernel {kernel.built.kernel_release} from {kernel.source_spec}, build {kernel.built.build_dir.name}",
        shlex.join([".venv/bin/fuse-harness", "build", *build_opts]),
        shlex.join(rerun_command("tests/vm", values)),
        "# the guest alone, with a shell in it (the QEMU command is in metadata.json):",
        "# " + shlex.join([".venv/bin/fuse-harness", "shell", *build_opts]),
    ])
    pytestconfig.stash[state.GUEST] = machine
    yield machine
    machine.stop()
    if claim is not None:
        claim.release()


# -- requirements ------------------------------------------------------------------
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
