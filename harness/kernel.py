"""From a target to a bootable kernel: source, (series), kconfig, build, with caching."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from harness import build, source
from harness.config import Target
from harness.log import Phases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernel:
    """A built kernel and what it was built from."""

    target: Target
    profile: str
    source_spec: str
    source_identity: str
    tree: Path
    built: build.Built

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
        }


def obtain(target: Target, profile: str = "default", phases: Phases | None = None,
           source_override: str | None = None) -> Kernel:
    """Prepare the source, apply the series (if any) and build; cached at every step."""
    phases = phases or Phases()
    spec = source_override or target.source
    src = source.parse(spec)
    fragments = list(target.fragments(profile))
    with phases.measure("source"):
        tree = src.prepare()
        identity = src.identity()
    series_identity = None
    if target.series:
        from harness import series as series_mod  # imported lazily: only targets with a series need it

        with phases.measure("series"):
            tree, series_identity = series_mod.apply_for_target(tree, identity, target.series)
    key = build.build_key(identity, series_identity, fragments)
    label = f"{target.name}-{profile}"
    with phases.measure("build"):
        built = build.build(tree, label, key, fragments, mutable=src.mutable and target.series is None,
                            metadata={"source": identity, "series": series_identity, "target": target.name,
                                      "profile": profile})
    return Kernel(target, profile, spec, identity, tree, built)
