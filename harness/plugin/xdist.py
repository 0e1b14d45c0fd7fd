"""pytest plugin, parallel half: `-n N` (pytest-xdist) gives every worker its own guest and the
run one folder.

The controller (the process that started pytest) checks the input, builds the kernel once
(its progress on the terminal), creates the run folder and hands its path to every worker
(`workerinput`). Each worker boots its own guest (own SSH port, console-<worker>-<boot>.log),
slices dmesg, restarts its guest after a crash and writes its tests' reproducers into that
folder. The verdict of each test travels back in its report (a `fuse_harness_case` user
property) and the worker's kernel/VM metadata and phase times in `workeroutput`; the
controller alone writes summary.json, results.ktap, junit.xml, metadata.json and the reports.
Loaded by harness.plugin (`pytest_plugins`); every xdist hook is optional, so the plugin also
loads where pytest-xdist is absent. harness.plugin.session imports it before pytest loads it as a
plugin, so it opts out of assertion rewriting (it has no asserts to rewrite), which also keeps
pytest's "already imported" warning out of every run: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness import config as hcfg
from harness.plugin.state import RUN_DIR

#: The user property that carries a worker's CaseResult (JSON) to the controller.
CASE_PROPERTY = "fuse_harness_case"
#: workerinput / workeroutput keys.
RUN_DIR_KEY = "fuse_harness_run_dir"
BUILT_KEY = "fuse_harness_built_stamp"
OUTPUT_KEY = "fuse_harness"
_WORKERS = pytest.StashKey[dict[str, dict[str, Any]]]()
_BUILT = pytest.StashKey[str]()


def _workerinput(config: pytest.Config) -> dict[str, Any]:
    """What the controller handed this xdist worker (pytest_configure_node); {} elsewhere."""
    return getattr(config, "workerinput", None) or {}


def worker_id(config: pytest.Config) -> str | None:
    """"gw0", "gw1", ... in an xdist worker; None in the controller or a run without -n."""
    return _workerinput(config).get("workerid")


def guests(config: pytest.Config) -> int:
    """How many guests run side by side: xdist's worker count in a worker, else 1."""
    return int(_workerinput(config).get("workercount", 1))


def shared_run_dir(config: pytest.Config) -> Path | None:
    """The run folder the controller made, in a worker (None elsewhere)."""
    value = _workerinput(config).get(RUN_DIR_KEY)
    return Path(value) if value else None


def hand_over_build(config: pytest.Config, build_dir: Path) -> None:
    """In the controller of an `-n N` run: keep the stamp of the kernel it just built
    (harness.build.STAMP, JSON) for the workers (pytest_configure_node)."""
    if distributing(config):
        from harness.build import STAMP

        with contextlib.suppress(OSError):
            config.stash[_BUILT] = (build_dir / STAMP).read_text()


def built_stamp(config: pytest.Config) -> dict | None:
    """In a worker: the stamp of the controller's build for this run. While the build dir's
    stamp is still that one, the worker reuses the build without running make, even for a
    user's tree, whose make the controller has just run (harness.build.build). Else None."""
    value = _workerinput(config).get(BUILT_KEY)
    return json.loads(value) if value else None


def distributing(config: pytest.Config) -> bool:
    """True in the controller of an `-n N` run (N > 0): it runs no test itself."""
    return worker_id(config) is None and config.pluginmanager.getplugin("dsession") is not None


def stop_session(request: pytest.FixtureRequest | None, message: str, returncode: int,
                 config: pytest.Config | None = None) -> NoReturn:
    """End the session for an infrastructure error (no kernel, no guest): pytest.exit, except
    in an xdist worker, where an exit would be an INTERNALERROR in the controller. There the
    worker stops after this test, which fails with the message (the controller prints it,
    and metadata.json gets it as "error"). request is None outside a fixture (the controller's
    own build): always pytest.exit.

    Before pytest.exit the message is printed as plain `E: ` lines on stderr (what the CLI
    prints for bad input), so it is not only inside pytest's `!!! Exit !!!` banner."""
    if request is None or worker_id(request.config) is None:
        _print_error(config or (request.config if request is not None else None), message)
        pytest.exit(message.splitlines()[0], returncode=returncode)
    request.session.shouldstop = message
    pytest.fail(message, pytrace=False)


def _print_error(config: pytest.Config | None, message: str) -> None:
    """message as `E: ` lines on the real stderr (outside pytest's capture)."""
    capman = config.pluginmanager.getplugin("capturemanager") if config is not None else None
    if capman is not None:
        capman.suspend_global_capture(in_=False)
    try:
        for line in message.splitlines():
            print(f"E: {line}", file=sys.stderr, flush=True)
    finally:
        if capman is not None:
            capman.resume_global_capture()


def reaches_vm_tests(config: pytest.Config) -> bool:
    """Whether the command line's paths include tests/vm (then the controller builds first)."""
    vm_dir = (hcfg.REPO / "tests" / "vm").resolve()
    root = Path(config.invocation_params.dir)
    for arg in config.args or ["."]:
        path = (root / arg.split("::", 1)[0]).resolve()
        if path == vm_dir or vm_dir in path.parents or path in vm_dir.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` over VM tests: as many guests as this host runs side by side
    (harness.vm.boot.auto_guests) rather than xdist's one worker per CPU. None (xdist decides)
    when PYTEST_XDIST_AUTO_NUM_WORKERS is set or no VM test is selected. The accelerator is
    judged without a test guest (boot.kvm_obstacle): a KVM host whose KVM then fails gets
    fewer guests, never more."""
    import os

    from harness.errors import HarnessError
    from harness.vm.boot import auto_guests, kvm_obstacle

    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not reaches_vm_tests(config):
        return None
    try:
        settings = hcfg.vm_settings(config.getoption("profile", None) or "default",
                                    accel=config.getoption("accel", None))
    except HarnessError:  # one guest; the session's own check of the settings says why
        return 1
    accel = settings.accel if settings.accel != "auto" else getattr(kvm_obstacle(), "kind", "kvm")
    return auto_guests(settings, accel)


def pytest_configure(config: pytest.Config) -> None:
    """Controller of an `-n N` run over VM tests: xdist's load scheduling hands each worker
    one test at a time (and keeps two queued) unless --maxschedchunk says otherwise. By
    default it hands out chunks of consecutive tests, a quarter of a worker's share at first,
    so the long tests that start first (pytest_collection_modifyitems) would all go to one
    guest; one at a time, the next free guest takes the next longest."""
    if (getattr(config.option, "dist", "no") == "load" and getattr(config.option, "maxschedchunk", 0) is None
            and worker_id(config) is None and reaches_vm_tests(config)):
        config.option.maxschedchunk = 1


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With guests side by side, the tests marked `long` start first, the longest first (by
    the marker's rough seconds under TCG; a stable sort: the rest keep their order), so no
    guest is left with a 20-120 s test while the others have finished. Every worker
    collects, and sorts the same way (xdist checks that their collections agree)."""
    if guests(config) > 1:
        def rank(item: pytest.Item) -> float:
            mark = item.get_closest_marker("long")
            return 0.0 if mark is None else -float(mark.args[0] if mark.args else 1)

        items.sort(key=rank)


@pytest.hookimpl(tryfirst=True)  # before xdist's DSession starts the workers
def pytest_sessionstart(session: pytest.Session) -> None:
    """Controller of an `-n N` run: start the record of what its workers report (the run
    folder and the build: harness.plugin.session's pytest_sessionstart)."""
    if distributing(session.config):
        session.config.stash[_WORKERS] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # noqa: ANN001 (xdist's WorkerController)
    run_dir = node.config.stash.get(RUN_DIR, None)
    if run_dir is not None:
        node.workerinput[RUN_DIR_KEY] = str(run_dir)
    built = node.config.stash.get(_BUILT, None)
    if built is not None:
        node.workerinput[BUILT_KEY] = built


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001
    """Keep what a worker reports about its kernel, guest and phase times."""
    output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
    workers = node.config.stash.get(_WORKERS, None)
    if output is not None and workers is not None:
        workers[node.gateway.id] = json.loads(output)


def worker_output(config: pytest.Config, meta: dict[str, Any], durations: dict[str, float]) -> None:
    """In a worker that used the run folder, at session end: its metadata and phase times."""
    config.workeroutput[OUTPUT_KEY] = json.dumps({"meta": meta, "durations": durations}, default=str)


def unused(config: pytest.Config, meta: dict[str, Any]) -> bool:
    """In the controller at session end: True when neither a worker used the run folder nor
    the controller built a kernel into its record (meta: metadata.json's data), i.e. a run of
    unit tests only, so the folder can go."""
    return not config.stash.get(_WORKERS, {}) and not meta.get("kernel")


def merge_workers(config: pytest.Config, meta: dict[str, Any], durations: dict[str, float]) -> None:
    """In the controller at session end: metadata["workers"] (each worker's VM), the kernel
    (if the controller did not build it), and per phase the longest worker's seconds (they
    ran side by side)."""
    workers = config.stash.get(_WORKERS, None)
    if not workers:
        return
    for wid, out in sorted(workers.items()):
        wmeta = out.get("meta", {})
        meta.setdefault("workers", {})[wid] = {"vm": wmeta.get("vm"), "durations": out.get("durations", {})}
        if wmeta.get("kernel") and not meta.get("kernel"):
            meta["kernel"] = wmeta["kernel"]
        if wmeta.get("vm") and not meta.get("vm"):
            meta["vm"] = wmeta["vm"]
        if wmeta.get("error"):  # a worker without a kernel or a guest
            meta["error"] = "; ".join(filter(None, (meta.get("error"), f"{wid}: {wmeta['error']}")))
        for phase, seconds in out.get("durations", {}).items():
            durations[phase] = max(durations.get(phase, 0.0), seconds)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched) -> None:  # noqa: ANN001
    """A worker died during crashitem (xdist replaces it and reports the test failed): give that
    report a verdict, so summary.json, KTAP and JUnit list the test."""
    from harness.results.model import CaseResult, Verdict

    case_property(report, CaseResult(crashitem, Verdict.ERROR, reason=str(report.longrepr)[:500]).to_json())


def case_property(report: pytest.TestReport, case_json: dict) -> None:
    """Attach a worker's verdict to the report xdist sends to the controller."""
    report.user_properties.append((CASE_PROPERTY, json.dumps(case_json)))


def case_of(report: pytest.TestReport) -> dict | None:
    """The verdict a worker attached (controller side), None for a report without one."""
    for key, value in getattr(report, "user_properties", ()):
        if key == CASE_PROPERTY:
            return json.loads(value)
    return None
