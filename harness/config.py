"""YAML in, frozen dataclasses out: targets, profiles and VM settings.

Resolution order for every setting: CLI > environment (FUSE_HARNESS_*) > YAML > defaults.
Unknown keys are errors that name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from guest.transports.features import TRANSPORTS
from harness.errors import ConfigError, UnknownTarget

REPO = Path(__file__).resolve().parent.parent
TARGETS_DIR = REPO / "targets"
KCONFIGS_DIR = REPO / "kconfigs"
# TRANSPORTS (imported above): the transports the guest server speaks, fixed names shared by CLI,
# markers, KTAP and JSON, from the guest's table of transport features.
#: What a target or series may promise: the guest's transports plus posted-series variants.
PROMISABLE = (*TRANSPORTS, "pinned-headers", "pinned-buffers")
PROFILES: dict[str, tuple[str, ...]] = {"default": (), "debug": ("debug",), "race": ("race",)}
#: Profiles whose instrumented kernels get the debug time scale and boot timeout.
SLOW_PROFILES = ("debug", "race")
DEFAULT_TARGET = "v7.3"


@dataclass(frozen=True)
class Target:
    """What to build: a kernel source, an optional series, kconfig fragments, promises."""

    name: str
    source: str
    description: str = ""
    series: str | None = None
    kconfig: tuple[str, ...] = ("base", "fuse-uring", "trim")
    promises: tuple[str, ...] = ()
    kernel_version: str | None = None
    #: One line on how to get the series when its file is missing (shown with the error).
    series_hint: str | None = None
    path: Path | None = None

    def check_series(self) -> None:
        """SeriesError (one line + how to get it) when the series file the target names is
        missing, before anything is downloaded or built."""
        kind, _, rest = (self.series or "").partition(":")
        if kind in ("mbox", "dir") and rest and not Path(rest).exists():
            from harness.errors import SeriesError

            raise SeriesError(f"target {self.name}: its series {kind} {rest} is missing",
                              hint=self.series_hint or "pass another one with --series")

    def fragments(self, profile: str) -> tuple[Path, ...]:
        """The kconfig fragment files for this target under a profile, in merge order."""
        if profile not in PROFILES:
            raise ConfigError(
                f"unknown profile {profile!r}", hint=f"choose one of: {', '.join(PROFILES)}"
            )
        names = self.kconfig + PROFILES[profile]
        paths = []
        for name in names:
            path = KCONFIGS_DIR / f"{name}.config"
            if not path.is_file():
                raise ConfigError(
                    f"target {self.name}: kconfig fragment {name!r} not found at {path}",
                    hint=f"available: {', '.join(supported_fragments())}",
                )
            paths.append(path)
        return tuple(paths)


#: The kernel command line word that switches kmemleak off at boot (vm_settings()).
KMEMLEAK_OFF = "kmemleak=off"


@dataclass(frozen=True)
class VmSettings:
    """How to boot the guest."""

    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"  # auto | kvm | tcg
    #: QEMU's `-accel tcg,thread=`: "multi" (a host thread per vCPU), "single" (one thread
    #: for all vCPUs), or "auto": see harness.vm.boot.tcg_threads().
    tcg_threads: str = "auto"
    boot_timeout: float = 180.0
    exec_timeout: float = 600.0
    append: tuple[str, ...] = ("fuse.enable_uring=1",)
    #: Multiplies every boot/command timeout (and guest edge budgets): a KASAN + lockdep
    #: kernel under TCG is several times slower. Default 1, or DEBUG_TIME_SCALE for debug.
    time_scale: float = 1.0

    def kmemleak(self, built_in: bool) -> bool:
        """Whether kmemleak runs in a guest booted with these settings: its kernel has it
        (built_in: CONFIG_DEBUG_KMEMLEAK) and the command line does not switch it off, as
        vm_settings() does on the debug profile unless FUSE_HARNESS_KMEMLEAK=1."""
        return built_in and KMEMLEAK_OFF not in self.append


#: Default time_scale of the debug profile (KASAN, lockdep, UBSAN under TCG).
DEBUG_TIME_SCALE = 3.0
#: Default boot_timeout of the debug profile (seconds, before the time scale).
DEBUG_BOOT_TIMEOUT = 300.0


_TARGET_KEYS = {f for f in Target.__dataclass_fields__ if f != "path"}


def supported() -> list[str]:
    """Names of the targets shipped in targets/."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def supported_fragments() -> list[str]:
    """Names of the kconfig fragments in kconfigs/."""
    return sorted(p.stem for p in KCONFIGS_DIR.glob("*.config"))


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _as_tuple(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: key {key!r} must be a list of strings")
    return tuple(value)


def load_target_file(path: Path) -> Target:
    """Parse one target YAML file, rejecting unknown keys and unknown transports."""
    data = _load_yaml(path)
    unknown = sorted(set(data) - _TARGET_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(sorted(_TARGET_KEYS))}"
        )
    if "source" not in data:
        raise ConfigError(f"{path}: missing required key 'source'")
    kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in ("kconfig", "promises")}
    kwargs.setdefault("name", path.stem)
    if "kconfig" in data:
        kwargs["kconfig"] = _as_tuple(path, "kconfig", data["kconfig"])
    promises = _as_tuple(path, "promises", data.get("promises", []))
    bad = [p for p in promises if p not in PROMISABLE]
    if bad:
        raise ConfigError(
            f"{path}: unknown transport {bad[0]!r} in promises", hint=f"known: {', '.join(PROMISABLE)}"
        )
    kwargs["promises"] = promises
    if isinstance(kwargs.get("series"), str):
        kwargs["series"] = resolve_series_path(kwargs["series"], path.parent)
    if kwargs.get("kernel_version") is not None:
        kwargs["kernel_version"] = str(kwargs["kernel_version"])
    return Target(path=path, **kwargs)


def resolve_series_path(series: str, folder: Path) -> str:
    """`mbox:`/`dir:` paths of a target file, made absolute from the file's folder (so the
    target works from any cwd); other series strings are returned as they are."""
    kind, sep, rest = series.partition(":")
    if sep and kind in ("mbox", "dir") and rest:
        path = Path(rest).expanduser()
        return f"{kind}:{path if path.is_absolute() else (folder / path).resolve()}"
    return series


def load_target(name_or_path: str | None) -> Target:
    """A target by name (targets/NAME.yaml) or by path to a YAML file."""
    name = name_or_path or os.environ.get("FUSE_HARNESS_TARGET") or DEFAULT_TARGET
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_target_file(candidate)
    path = TARGETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UnknownTarget(
            f"unknown target {name!r}",
            hint=f"choose one of: {', '.join(supported())}, or pass a path to a target YAML file",
        )
    return load_target_file(path)


def memory_bytes(size: str) -> int:
    """QEMU's -m size in bytes: a number with an optional K/M/G/T suffix ("2G", "512M"; no
    suffix: MiB). ConfigError for anything else or a size under 128 MiB."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = str(size).strip().upper()
    scale = units.get(text[-1:], 1 << 20)
    try:
        value = int(float(text[:-1] if text[-1:] in units else text) * scale)
    except ValueError:
        value = 0
    if value < 128 << 20:
        raise ConfigError(f"bad guest memory {size!r} (FUSE_HARNESS_MEMORY or --memory)",
                          hint="a size QEMU's -m takes, such as 2G or 4096 (MiB), at least 128M")
    return value


def vm_settings(profile: str = "default", **overrides: Any) -> VmSettings:
    """VmSettings from defaults (the debug profile scales timeouts by DEBUG_TIME_SCALE), then
    FUSE_HARNESS_* env, then explicit (CLI) overrides."""
    env_map = {
        "memory": "FUSE_HARNESS_MEMORY",
        "cpus": "FUSE_HARNESS_CPUS",
        "accel": "FUSE_HARNESS_ACCEL",
        "tcg_threads": "FUSE_HARNESS_TCG_THREADS",
        "boot_timeout": "FUSE_HARNESS_BOOT_TIMEOUT",
        "time_scale": "FUSE_HARNESS_TIME_SCALE",
    }
    # debug: a KASAN + lockdep guest under TCG needs 4.5 to over 9 minutes to reach SSH, most
    # of it in udev coldplug and `udevadm settle` (up to 300 s): 300 s x the time scale
    values: dict[str, Any] = ({"time_scale": DEBUG_TIME_SCALE, "boot_timeout": DEBUG_BOOT_TIMEOUT}
                              if profile in SLOW_PROFILES else {})
    if profile == "debug" and os.environ.get("FUSE_HARNESS_KMEMLEAK", "0") != "1":
        # kmemleak is built in but switched off at boot unless asked for: under TCG it makes a
        # KASAN + lockdep boot too slow for the boot timeout (measured: see README)
        values["append"] = (*VmSettings.append, KMEMLEAK_OFF)
    for key, var in env_map.items():
        if var in os.environ:
            values[key] = os.environ[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        if "cpus" in values:
            values["cpus"] = int(values["cpus"])
        for key in ("boot_timeout", "time_scale"):
            if key in values:
                values[key] = float(values[key])
    except ValueError as exc:
        raise ConfigError(f"bad VM setting: {exc}") from None
    if values.get("tcg_threads", "auto") not in ("auto", "multi", "single"):
        raise ConfigError(f"bad TCG threading {values['tcg_threads']!r} (FUSE_HARNESS_TCG_THREADS)",
                          hint="use auto, multi or single")
    if values.get("accel", "auto") not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"bad accel {values['accel']!r}", hint="use auto, kvm or tcg")
    if values.get("time_scale", 1.0) <= 0:
        raise ConfigError(f"bad time scale {values['time_scale']}", hint="use a factor such as 1 or 3")
    if values.get("cpus", 1) < 1:
        raise ConfigError(f"bad vCPU count {values['cpus']}", hint="use 1 or more (FUSE_HARNESS_CPUS, --cpus)")
    memory_bytes(values.get("memory", VmSettings.memory))
    return VmSettings(**values)


def check_scale() -> int:
    """$FUSE_HARNESS_CHECK_SCALE as a whole number >= 1 (unset: 1): the factor the VM tests pass
    to `python3 -m guest check --scale` and apply to the shell clients' file (tests/vm/
    test_transports.py). 1 runs each data case at the size its paths need; 4 brings the bulk
    near the former workloads (2 MiB files where they were 3 and 8 MiB, fsx 800 operations
    where it ran 300: guest/checks/*_cases.py). ConfigError for anything else."""
    text = os.environ.get("FUSE_HARNESS_CHECK_SCALE", "1")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"bad FUSE_HARNESS_CHECK_SCALE {text!r}",
                          hint="a whole number >= 1: 1 (the default) or 4 for workloads near the former sizes")
    return value


@dataclass(frozen=True)
class Selection:
    """A resolved target + profile pair, the unit a build is keyed on."""

    target: Target
    profile: str = "default"
    extra: dict[str, str] = field(default_factory=dict)
