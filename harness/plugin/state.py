"""The pytest plugin's shared state: the stash keys its parts (session, results, health,
xdist) hand each other, and the session's options as resolved (option, ini value, env)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import config as hcfg
from harness import dmesg
from harness.log import Phases
from harness.results.meta import Metadata
from harness.results.model import CaseResult

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
#: The session's guest (harness.vm.machine.Vm) once the vm fixture has it.
GUEST = pytest.StashKey[object]()
#: Seconds the plugin spent in the guest around one test: BEGIN, END marker with the kernel log.
HARNESS_SECONDS = pytest.StashKey[float]()
SUBTESTS = pytest.StashKey[list[dict[str, str]]]()
ITEMS = pytest.StashKey[dict[str, pytest.Item]]()
#: The session's pytest.Config, for hooks that get only a report.
CONFIG: dict[str, pytest.Config] = {}


def opt(cfg: pytest.Config, name: str, ini: str | None = None, env: str | None = None) -> str | None:
    """The option `name` as given, else $env, else the ini value `ini`; None when none is set."""
    value = cfg.getoption(name)
    if value is None and env:
        value = os.environ.get(env)
    if value is None and ini:
        value = cfg.getini(ini) or None
    return value


def target_name(cfg: pytest.Config) -> str | None:
    """--target, the ini value or $FUSE_HARNESS_TARGET (None: the default target)."""
    return opt(cfg, "target", "fuse_harness_target", "FUSE_HARNESS_TARGET")


def profile_name(cfg: pytest.Config) -> str:
    """--profile, the ini value or $FUSE_HARNESS_PROFILE ("default" when none is set)."""
    return opt(cfg, "profile", "fuse_harness_profile", "FUSE_HARNESS_PROFILE") or "default"


def rerun_values(cfg: pytest.Config) -> dict[str, str | None]:
    """target/profile/source/series/accel as this session resolved them (for reproducers)."""
    return {"target": target_name(cfg) or hcfg.DEFAULT_TARGET, "profile": profile_name(cfg),
            "source": opt(cfg, "source", env="FUSE_HARNESS_SOURCE"),
            "series": opt(cfg, "series", env="FUSE_HARNESS_SERIES"), "accel": opt(cfg, "accel")}


def guest_stop_args(item: pytest.Item) -> list[str]:
    """`python3 -m guest check` options for a guest suite that `item` runs: under pytest's -x
    (--maxfail 1: `fuse-harness mutate` runs so) the session stops at its first failing test,
    so the guest suite stops at its first failing case too (--stop-at-first-failure: the later
    ones would only cost time, each waiting out its timeouts, for a verdict already given),
    except after a case a known issue of this test makes fail (--known-failing PATTERN...:
    those fail as expected, and the cases after them must still run). [] without -x."""
    if item.config.getoption("maxfail", 0) != 1:
        return []
    known = list(item.stash.get(KNOWN_CASES, ()))
    return ["--stop-at-first-failure", *(["--known-failing", *known] if known else [])]
