"""Kernel source providers: Debian packages, a local tree, a tarball."""

from __future__ import annotations

from harness.errors import SourceError
from harness.source.base import KernelSource
from harness.source.debian import DebianSource
from harness.source.tarball import TarballSource
from harness.source.tree import TreeSource

KINDS = {"debian": DebianSource, "path": TreeSource, "tarball": TarballSource}


def parse(spec: str) -> KernelSource:
    """`debian:linux-source-7.3`, `path:/a/linux/tree` or `tarball:FILE` -> a provider."""
    kind, sep, value = spec.partition(":")
    if not sep or kind not in KINDS or not value:
        raise SourceError(
            f"bad kernel source {spec!r}",
            hint="use debian:linux-source-X.Y, path:/a/linux/tree or tarball:FILE",
        )
    return KINDS[kind](value)


__all__ = ["KernelSource", "parse"]
