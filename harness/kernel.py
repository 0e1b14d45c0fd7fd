"""From a target to a bootable kernel: source, (series), kconfig, build, with caching."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness import build, source
from harness.cache import exclusive, safe_name
from harness.config import Target, load_target
from harness.log import Phases

log = logging.getLogger(__name__)

#: Pins the build folder for every source state (set by `fuse-harness bisect` for its pytest runs).
BUILD_DIR_ENV = "FUSE_HARNESS_BUILD_DIR"


@dataclass(frozen=True)
class Kernel:
    """A built kernel and what it was built from."""

    target: Target
    profile: str
    source_spec: str
    source_identity: str
    tree: Path
    built: build.Built
    series: str | None = None
    series_identity: str | None = None
    abi: object | None = None  # harness.series.AbiProfile of the built tree

    def promises(self) -> tuple[str, ...]:
        """Transports promised by the target and by its series manifest."""
        promised = list(self.target.promises)
        if self.series:
            from harness.series import parse_series

            promised += [t for t in parse_series(self.series).promises if t not in promised]
        return tuple(promised)

    def has_config(self, option: str) -> bool:
        """Whether the built .config sets CONFIG_<option> to y or m."""
        return re.search(rf"^CONFIG_{option}=[ym]", self.built.config.read_text(), re.M) is not None

    @property
    def image(self) -> Path:
        return self.built.image

    def describe(self) -> dict:
        return {
            "target": self.target.name,
            "profile": self.profile,
            "source": self.source_spec,
            "source_identity": self.source_identity,
            "tree": str(self.tree),
            "build_dir": str(self.built.build_dir),
            "build_key": self.built.key,
            "build_reused": self.built.reused,
            "build_seconds": round(self.built.seconds, 1),
            "kernel_release": self.built.kernel_release,
            "image": str(self.built.image),
            "compiler": build.compiler_version(),
            "series": self.series,
            "series_identity": self.series_identity,
            "abi": None if self.abi is None else {
                "minor": getattr(self.abi, "minor", None),
                "generations": list(getattr(self.abi, "generations", ())),
                "transports": list(getattr(self.abi, "transports", ())),
            },
        }


def preflight(target: Target, profile: str = "default", source_override: str | None = None,
              series_override: str | None = None) -> None:
    """Every check of the inputs that needs neither network nor a build, so bad input stops
    before a run folder, a download or a boot: the profile and its kconfig fragments, the
    source spec (and its path), the series spec (and its file), the guest's FUSE_HARNESS_*
    settings (and FUSE_HARNESS_CHECK_SCALE). Raises what obtain() or a boot would raise later:
    ConfigError, SourceError, SeriesError (all exit 4)."""
    from harness.config import check_scale, vm_settings

    vm_settings(profile)
    check_scale()
    if not series_override:
        target.check_series()
    target.fragments(profile)
    source.parse(source_override or target.source).check()
    ref = series_override or target.series
    if ref:
        from harness.series import parse_series

        parse_series(ref)


def obtain(target: Target, profile: str = "default", phases: Phases | None = None,
           source_override: str | None = None, series_override: str | None = None,
           build_dir: Path | None = None, built_stamp: dict | None = None) -> Kernel:
    """Prepare the source, apply the series (if any) and build; cached at every step.

    `build_dir` (else $FUSE_HARNESS_BUILD_DIR) pins one build folder for every source state,
    so successive commits of a tree build incrementally (bisect); a user's tree (path:) gets
    one such folder of its own. There, a clean git tree's identity is exact, so an unchanged
    key is reused without running make; any other state runs make (incremental), unless
    `built_stamp` says this run built that very state already (harness.build.build).
    """
    phases = phases or Phases()
    # bad input is named at once, not after another process's build that holds the lock
    preflight(target, profile, source_override, series_override)
    with exclusive("obtain", "kernel"):
        return _obtain(target, profile, phases, source_override, series_override, build_dir, built_stamp)


def obtain_for(args) -> Kernel:  # noqa: ANN001
    """The kernel a command line names: its --target (config.load_target), --profile, --source
    and --series (an argparse.Namespace with those four), through obtain()."""
    return obtain(load_target(args.target), args.profile, source_override=args.source,
                  series_override=args.series)


def _obtain(target: Target, profile: str, phases: Phases, source_override: str | None,
            series_override: str | None, build_dir: Path | None, built_stamp: dict | None = None) -> Kernel:
    pinned = build_dir or os.environ.get(BUILD_DIR_ENV)
    build_dir = Path(pinned).expanduser().resolve() if pinned else None
    spec = source_override or target.source
    src = source.parse(spec)
    fragments = list(target.fragments(profile))
    with phases.measure("source"):
        tree = src.prepare()
        identity = src.identity()
    series_identity = None
    series_ref = series_override or target.series
    if series_ref:
        from harness import series as series_mod  # imported lazily: only targets with a series need it

        with phases.measure("series"):
            tree, series_identity = series_mod.apply_for_target(tree, identity, series_ref)
    key = build.build_key(identity, series_identity, fragments)
    label = f"{target.name}-{profile}"
    if build_dir is None and src.mutable and series_ref is None:
        # A user's tree: one build folder per tree and config, whatever its HEAD or edits, so
        # the run after an edit or a commit is an incremental make, not a new folder.
        build_dir = build.place(tree, safe_name(f"{label}-{build.build_key(f'path:{tree}', None, fragments)}"))
    with phases.measure("build"):
        mutable = src.mutable and series_ref is None and not (build_dir and identity.endswith("+clean"))
        built = build.build(tree, label, key, fragments, mutable=mutable, build_dir=build_dir,
                            built_stamp=built_stamp,
                            metadata={"source": identity, "series": series_identity, "target": target.name,
                                      "profile": profile})
    from harness.series import detect_abi

    return Kernel(target, profile, spec, identity, tree, built, series_ref, series_identity, detect_abi(tree))
